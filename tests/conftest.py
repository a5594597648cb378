"""Shared test set-up: no progress bars, a private key directory per session, small torch thread pools."""
import os

import pytest

os.environ.setdefault("GENGUARD_NO_PROGRESS", "1")


@pytest.fixture(autouse=True, scope="session")
def _isolated_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("genguard-home")
    old = os.environ.get("GENGUARD_HOME")
    os.environ["GENGUARD_HOME"] = str(home)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    yield home
    if old is None:
        os.environ.pop("GENGUARD_HOME", None)
    else:
        os.environ["GENGUARD_HOME"] = old


@pytest.fixture(scope="session")
def digits():
    from genguard.generators.data import digits_split

    return digits_split()


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A key directory of this test module's own (GENGUARD_HOME), restored afterwards."""
    h = tmp_path_factory.mktemp("gghome")
    old = os.environ.get("GENGUARD_HOME")
    os.environ["GENGUARD_HOME"] = str(h)
    yield h
    if old is None:
        os.environ.pop("GENGUARD_HOME", None)
    else:
        os.environ["GENGUARD_HOME"] = old


@pytest.fixture(scope="module")
def keys(home):
    """The local CA, signer and watermark key, created in this module's key directory."""
    from genguard.guardrails.provenance import KeyStore

    return KeyStore.load_or_create()
