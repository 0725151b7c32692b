"""The tier guard (tests/tiers.py): a unit test that starts Ray or a Python child process
fails with the tier it belongs in; a test names at most one tier; every collected test of
this suite has exactly one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

CONFTEST = '''
import pytest
from tiers import assign_tiers, guard_unit_test  # noqa: F401

@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    assign_tiers(items)

@pytest.fixture(autouse=True)
def _tier_guard(guard_unit_test):
    yield
'''

INI = """[pytest]
markers =
    unit: u
    e2e: e
    ray: r
    cluster: c
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    """A temp dir with this suite's tier guard and a conftest that uses it."""
    shutil.copy(HERE / "tiers.py", pytester.path / "tiers.py")
    pytester.makeconftest(CONFTEST)
    pytester.makeini(INI)
    pytester.syspathinsert()
    return pytester


def test_unit_test_that_starts_ray_fails_naming_the_ray_tier(suite: pytest.Pytester):
    suite.makepyfile(test_a="""
        import pytest

        def test_starts_ray():
            import ray
            ray.init(num_cpus=1)

        @pytest.mark.ray
        def test_marked_ray_may_call_it(monkeypatch):
            import ray
            monkeypatch.setattr(ray, "init", lambda **kw: "started")   # no real cluster here
            assert ray.init(num_cpus=1) == "started"
        """)
    result = suite.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*WrongTier*test_starts_ray is a unit test but starts Ray: "
                                 "mark it pytest.mark.ray*"])


def test_e2e_test_that_starts_ray_fails_naming_the_ray_tier(suite: pytest.Pytester):
    suite.makepyfile(test_e="""
        import pytest

        @pytest.mark.e2e
        def test_e2e_starts_ray():
            import ray
            ray.init(num_cpus=1)

        @pytest.mark.e2e
        def test_e2e_without_ray():
            assert True
        """)
    result = suite.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*WrongTier*test_e2e_starts_ray is an e2e test but starts "
                                 "Ray: mark it pytest.mark.ray*"])


def test_unit_test_with_a_python_child_or_a_process_fails(suite: pytest.Pytester):
    suite.makepyfile(test_b="""
        import multiprocessing, subprocess, sys

        def test_python_child():
            subprocess.run([sys.executable, "-c", "pass"], check=True)

        def test_shell_python_child():
            subprocess.run("python3 -c pass", shell=True, check=True)

        def test_process():
            multiprocessing.get_context("spawn").Process(target=print).start()

        def test_other_commands_are_allowed():
            assert subprocess.run(["true"]).returncode == 0
        """)
    result = suite.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=3)
    result.stdout.fnmatch_lines(["*starts a Python child process*mark it pytest.mark.e2e*",
                                 "*starts a multiprocessing process*mark it pytest.mark.ray*"],
                                consecutive=False)


def test_selecting_the_unit_tier_takes_unmarked_tests_only(suite: pytest.Pytester):
    suite.makepyfile(test_c="""
        import pytest

        def test_plain():
            pass

        @pytest.mark.e2e
        def test_e2e():
            pass

        @pytest.mark.cluster
        def test_cluster():
            pass
        """)
    result = suite.runpytest_inprocess("-p", "no:cacheprovider", "-m", "unit")
    result.assert_outcomes(passed=1, deselected=2)


def test_two_tiers_on_one_test_is_a_usage_error(suite: pytest.Pytester):
    suite.makepyfile(test_d="""
        import pytest

        @pytest.mark.ray
        @pytest.mark.e2e
        def test_both():
            pass
        """)
    result = suite.runpytest_inprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_both: marked with tiers e2e, ray; a test belongs to "
                                 "exactly one*"])


def test_every_test_of_this_suite_has_exactly_one_tier(request: pytest.FixtureRequest):
    from tiers import TIERS, tier_of

    items = request.session.items
    assert items   # this session's collected tests (maybe a -k / -m selection of them)
    for item in items:
        assert tier_of(item) in TIERS
        assert sum(item.get_closest_marker(t) is not None for t in TIERS) == 1, item.nodeid
