"""The generation package's public names are pinned: the serving layer codes against exactly these."""

from __future__ import annotations

import skylift.generation as generation


def test_public_api_is_pinned() -> None:
    assert sorted(generation.__all__) == [
        "Completion",
        "ContextExceeded",
        "Engine",
        "EngineClosed",
        "EngineStats",
        "Event",
        "FinishReason",
        "GenerationFailed",
        "Handle",
        "Histogram",
        "InvalidRequest",
        "QueueFull",
        "SamplingParams",
        "Usage",
    ]
    for name in generation.__all__:
        assert getattr(generation, name) is not None


def test_errors_map_onto_the_skylift_tree() -> None:
    from skylift.errors import Overloaded, SkyliftError, SpecError

    assert issubclass(generation.ContextExceeded, generation.InvalidRequest)
    assert issubclass(generation.InvalidRequest, SpecError)  # a bad argument: 400
    assert issubclass(generation.QueueFull, Overloaded) and issubclass(generation.EngineClosed, Overloaded)
    assert issubclass(generation.GenerationFailed, SkyliftError)
    assert generation.QueueFull("full", retry_after_s=3).retry_after_s == 3
