"""The pytest plugin, run through pytester: its fixtures need no import and are configurable."""

from __future__ import annotations

import pytest

# hypothesis's plugin re-imports hypothesis on every in-process run (a second each): off.
INI = """
[pytest]
asyncio_mode = {mode}
asyncio_default_fixture_loop_scope = function
addopts = --strict-markers -p no:cacheprovider -p no:hypothesispytest
filterwarnings = error::ResourceWarning
"""


@pytest.fixture
def strict(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester project in pytest-asyncio's strict mode, as most user projects are."""
    pytester.makeini(INI.format(mode="strict"))
    return pytester


def test_fixtures_work_without_import_in_strict_mode(strict: pytest.Pytester) -> None:
    """polyai_fake and polyai_client are there with no import, even without asyncio auto mode."""
    strict.makepyfile(
        """
        import pytest

        @pytest.mark.asyncio
        async def test_chat(polyai_fake, polyai_client):
            created = await polyai_client.create_chat()
            reply = await polyai_client.respond(created.conversation_id, "bye")
            assert reply.end_conversation
            assert polyai_fake.requests == {"create": 1, "respond": 1}
            assert polyai_fake.url.startswith("http://127.0.0.1:")
        """
    )
    strict.runpytest().assert_outcomes(passed=1)


def test_fixtures_are_torn_down_after_each_test(strict: pytest.Pytester) -> None:
    """Each test gets its own fake; after it, the client is closed and the fake stopped."""
    strict.makepyfile(
        """
        import pytest

        seen = []

        @pytest.mark.asyncio
        async def test_first(polyai_fake, polyai_client):
            seen.append((polyai_fake, polyai_client))

        @pytest.mark.asyncio
        async def test_second(polyai_fake):
            fake, client = seen[0]
            assert client.closed
            assert not fake.running
            assert polyai_fake is not fake
        """
    )
    strict.runpytest().assert_outcomes(passed=2)


def test_options_fixture_and_marker_configure_the_fake(strict: pytest.Pytester) -> None:
    """polyai_fake_options sets defaults; a polyai marker overrides them per test."""
    strict.makeconftest(
        """
        import pytest
        from polyai_async.testing import EchoAgent

        @pytest.fixture
        def polyai_fake_options():
            return {"agent": EchoAgent("echo: "), "account_id": "acme"}
        """
    )
    strict.makepyfile(
        """
        import pytest
        from polyai_async.testing import EchoAgent

        pytestmark = pytest.mark.polyai(project_id="module-bot")

        @pytest.mark.asyncio
        async def test_defaults(polyai_fake, polyai_client):
            created = await polyai_client.create_chat()
            reply = await polyai_client.respond(created.conversation_id, "x")
            assert reply.response == "echo: x"
            assert (polyai_fake.account_id, polyai_fake.project_id) == ("acme", "module-bot")

        @pytest.mark.polyai(agent=EchoAgent("marked: "), project_id="test-bot")
        @pytest.mark.asyncio
        async def test_marker(polyai_fake, polyai_client):
            created = await polyai_client.create_chat()
            reply = await polyai_client.respond(created.conversation_id, "x")
            assert reply.response == "marked: x"
            assert (polyai_fake.account_id, polyai_fake.project_id) == ("acme", "test-bot")
        """
    )
    strict.runpytest().assert_outcomes(passed=2)


def test_client_options_and_faults(strict: pytest.Pytester) -> None:
    """polyai_client_options reaches the client; faults set by marker reach the fake."""
    strict.makepyfile(
        """
        import pytest
        from polyai_async import InternalServerError, RetryPolicy
        from polyai_async.testing import Faults

        @pytest.fixture
        def polyai_client_options():
            return {"retry": RetryPolicy(max_attempts=1)}

        @pytest.mark.polyai(faults=Faults(script=("500",)))
        @pytest.mark.asyncio
        async def test_not_retried(polyai_fake, polyai_client):
            with pytest.raises(InternalServerError):
                await polyai_client.create_chat()
            assert polyai_fake.requests["create"] == 1
        """
    )
    strict.runpytest().assert_outcomes(passed=1)


def test_marker_with_positional_arguments_is_a_usage_error(strict: pytest.Pytester) -> None:
    """@pytest.mark.polyai takes keyword arguments only, and says so."""
    strict.makepyfile(
        """
        import pytest

        @pytest.mark.polyai("oops")
        @pytest.mark.asyncio
        async def test_bad(polyai_fake):
            pass
        """
    )
    result = strict.runpytest()
    result.stdout.fnmatch_lines(["*keyword arguments only*"])
    assert result.ret != 0


def test_auto_mode_and_marker_is_registered(pytester: pytest.Pytester) -> None:
    """In auto mode plain async tests use the fixtures, and --markers lists polyai."""
    pytester.makeini(INI.format(mode="auto"))
    pytester.makepyfile(
        """
        async def test_auto(polyai_client):
            assert (await polyai_client.create_chat()).response
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)
    pytester.runpytest("--markers").stdout.fnmatch_lines(["@pytest.mark.polyai(**options)*"])


def test_strict_mode_needs_no_asyncio_mark_for_tests_using_the_plugin(
    strict: pytest.Pytester,
) -> None:
    """In strict mode an async test that asks for a polyai fixture by name, or carries the polyai
    mark (on the test, its class or its module), runs with no asyncio mark, without warnings."""
    strict.makepyfile(
        test_direct="""
        import pytest

        @pytest.fixture
        def my_fake(polyai_fake):
            return polyai_fake

        async def test_client(polyai_client):
            assert (await polyai_client.create_chat()).response

        @pytest.mark.polyai(seed=3)
        async def test_marked_only(my_fake):
            assert my_fake.running

        class TestInAClass:
            async def test_method(self, polyai_fake):
                assert polyai_fake.running
        """,
        test_module_mark="""
        import pytest

        pytestmark = pytest.mark.polyai(seed=1)

        @pytest.fixture
        def my_fake(polyai_fake):
            return polyai_fake

        async def test_module_marked(my_fake):
            assert my_fake.running
        """,
    )
    result = strict.runpytest("-W", "error")
    result.assert_outcomes(passed=4, warnings=0)


def test_strict_mode_leaves_other_async_tests_alone(strict: pytest.Pytester) -> None:
    """An async test that uses nothing of the plugin is not claimed for asyncio: strict mode
    still refuses it, as pytest-asyncio would without the plugin."""
    strict.makepyfile(
        """
        async def test_unrelated():
            pass
        """
    )
    result = strict.runpytest()
    assert result.parseoutcomes().get("passed", 0) == 0
    result.stdout.fnmatch_lines(["*async def functions are not natively supported*"])
