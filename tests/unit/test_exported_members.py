"""The public API is exactly ``llmload.__all__``, sorted, and every name resolves."""

import subprocess
import sys

import llmload


def test_all_is_sorted_and_every_name_resolves():
    assert llmload.__all__ == sorted(llmload.__all__)
    for name in llmload.__all__:
        assert getattr(llmload, name) is not None
    assert set(dir(llmload)) >= set(llmload.__all__)


def test_importing_the_package_does_not_import_locust():
    code = "import sys, llmload, llmload.cli; print('locust' in sys.modules, 'gevent' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
