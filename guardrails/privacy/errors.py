"""The one error type of guardrails.privacy: a request that would break the DP analysis or is malformed."""


class PrivacyError(ValueError):
    """A request that would break the DP analysis or cannot be met (bad epsilon, delta >= 1/n, BatchNorm...)."""
