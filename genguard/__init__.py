"""genguard: the command line, the end-to-end train → sample → tag → audit pipeline, and the review console.

Nothing else in the project imports this package.
"""
__version__ = "0.1.0"
