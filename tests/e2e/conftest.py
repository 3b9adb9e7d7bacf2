"""Browser tests. Their mark is registered here too, so ``-p no:xdist`` runs them
without an unknown-mark warning (warnings are errors in this suite)."""


def pytest_configure(config):
    config.addinivalue_line("markers", "xdist_group(name): run on the one xdist worker of that group")
