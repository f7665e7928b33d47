"""The safety net: an error no handler expected reaches the page as a readable message with what to do next,
and Gradio still passes the request and progress to wrapped handlers and streams from wrapped generators."""

from __future__ import annotations

import gradio as gr
import pytest

from studio.ui.failures import readable, readable_failures


def test_an_unexpected_error_becomes_a_message_that_says_nothing_was_lost():
    def broken(value):
        return {}["missing"]

    with pytest.raises(gr.Error) as raised:
        readable(broken)(1)
    assert "KeyError: 'missing'" in raised.value.message and "Nothing already stored was lost" in raised.value.message


def test_gradio_errors_pass_unchanged_and_generators_still_stream():
    def refused(_):
        raise gr.Error("choose a sample set first")

    with pytest.raises(gr.Error) as raised:
        readable(refused)(1)
    assert raised.value.message == "choose a sample set first"

    def stream(n):
        yield from range(n)
        raise OSError("disk full")

    wrapped = readable(stream)
    import inspect

    assert inspect.isgeneratorfunction(wrapped)
    seen = []
    with pytest.raises(gr.Error, match="OSError: disk full"):
        for value in wrapped(3):
            seen.append(value)
    assert seen == [0, 1, 2]  # what streamed before the failure was shown


def test_gradio_passes_the_request_and_progress_to_every_handler_that_asks(store):
    """A ``request`` or ``progress`` parameter after ``*values`` is keyword-only, and Gradio passes neither to
    those: the import, re-clean, train and generate handlers once recorded nobody as who did it."""
    from gradio import utils
    from gradio.helpers import special_args

    from studio.ui.app import build_app

    app = build_app(store)
    wrapped = [f.fn for f in app.fns.values() if f.fn is not None]
    assert wrapped and all(getattr(fn, "_readable_failures", False) or inspect_async(fn) for fn in wrapped)
    with_request = [fn for fn in wrapped if "request" in utils.get_type_hints(fn)]
    assert with_request, "no handler declares gr.Request"
    asking = gr.Request(username="ana")
    for fn in with_request:
        args, *_ = special_args(fn, [None] * 12, request=asking)
        assert any(getattr(arg, "username", None) == "ana" for arg in args), fn.__name__  # Gradio passes it
    import inspect

    with_progress = [fn for fn in wrapped if any(isinstance(p.default, gr.Progress)
                                                 for p in inspect.signature(fn).parameters.values())]
    assert len(with_progress) >= 3  # preflight and pushes (imports, exports, metrics: their task's status line)
    for fn in with_progress:
        assert special_args(fn, [None] * 12)[1] is not None, fn.__name__  # progress bars reach the page


def inspect_async(fn) -> bool:
    import inspect

    return inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)


def test_every_handler_the_server_serves_is_wrapped(store):
    """The apps exactly as ``build_server`` mounts them (the studio at ``/``, the rating page at ``/rate``), with
    every handler added up to then: none may reach people raw, whatever its kind (an async one included)."""
    from studio.ui.server import RATE, _mounted, build_server

    server = build_server(store)
    for path in ("", RATE):
        handlers = [f.fn for f in _mounted(server, path).get_blocks().fns.values() if f.fn is not None]
        assert len(handlers) > 10, path
        unwrapped = [fn.__name__ for fn in handlers if not getattr(fn, "_readable_failures", False)]
        assert unwrapped == [], f"{path or '/'}: {unwrapped}"
        assert all(readable(fn) is fn for fn in handlers)  # wrapping again changes nothing


def test_a_validation_error_no_handler_caught_names_the_field_not_pydantic():
    from studio.generation.options import ImageSettings

    def unchecked(value):
        return ImageSettings.model_validate({"guidance_scale": value})

    with pytest.raises(gr.Error) as raised:
        readable(unchecked)("lots")
    message = raised.value.message
    assert message.startswith("guidance scale: input should be a valid number, unable to parse string as a number "
                              "(got 'lots'). ")
    assert "input_value" not in message and "pydantic" not in message and "Nothing already stored was lost" in message
