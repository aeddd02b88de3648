"""A model's rollout: its traffic split (with guard and sticky header) and its shadow, as the shared
repository state records them, built from the command line or the admin API and checked against
the registry before any replica acts on it.

Every version a rollout names must exist and take and give exactly what the served version does
(its signature), or clients would get answers of another shape depending on the draw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from skylift.errors import SpecError
from skylift.serve.guard import Guard
from skylift.serve.shadow import AGREEMENT, ShadowSpec
from skylift.serve.splits import Split

if TYPE_CHECKING:
    from skylift.registry import Registry
    from skylift.serve.config import ServeConfig


@dataclass(frozen=True)
class Rollback:
    """A guard's decision, kept in the rollout so GET .../split shows why a canary has no weight."""

    version: int
    weight: int
    """The weight it had."""
    reason: str
    time: str
    """UTC, ISO 8601."""

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "weight": self.weight, "reason": self.reason, "time": self.time}


@dataclass(frozen=True)
class Rollout:
    model: str
    split: Split | None = None
    shadow: ShadowSpec | None = None
    rollbacks: tuple[Rollback, ...] = field(default=(), compare=False)
    """Guard decisions since the split was last set (newest last); not part of the routing."""

    def __post_init__(self) -> None:
        if self.split is not None and self.shadow is not None and self.split.weight(self.shadow.version):
            raise SpecError(
                f"version {self.shadow.version} of {self.model} cannot both take a share of the traffic "
                "and shadow it"
            )

    @property
    def empty(self) -> bool:
        return self.split is None and self.shadow is None

    @property
    def versions(self) -> tuple[int, ...]:
        """Every version the rollout needs loaded."""
        split = self.split.versions if self.split else ()
        return tuple(sorted({*split, *((self.shadow.version,) if self.shadow else ())}))

    def describe(self) -> str:
        """One line for logs and the audit: 'split 1=90,2=10 (sticky x-session, guard ...), shadow 3'."""
        parts = []
        if self.split is not None:
            extra = [f"sticky {self.split.sticky_header}"] if self.split.sticky_header else []
            extra += [f"guard {self.split.guard.describe()}"] if self.split.guard else []
            parts.append(f"split {self.split.describe()}" + (f" ({', '.join(extra)})" if extra else ""))
        if self.shadow is not None:
            parts.append(f"shadow {self.shadow.version} (queue {self.shadow.queue})")
        return ", ".join(parts) or "no split, no shadow"

    def to_json(self) -> dict[str, Any]:
        return {
            **(
                self.split.to_json()
                if self.split
                else {"weights": None, "sticky_header": None, "guard": None}
            ),
            "shadow": self.shadow.to_json() if self.shadow else None,
            "rollbacks": [r.to_json() for r in self.rollbacks],
        }

    @classmethod
    def from_state(cls, model: str, raw: dict[str, Any]) -> Rollout:
        """From repository.json (written by to_json, so trusted to be well formed)."""
        split = None
        if raw.get("weights") is not None:
            split = Split.from_json({k: raw[k] for k in ("weights", "sticky_header", "guard")})
        shadow = ShadowSpec.from_json(raw["shadow"]) if raw.get("shadow") else None
        rollbacks = tuple(Rollback(**r) for r in raw.get("rollbacks", ()))
        return cls(model, split, shadow, rollbacks)

    def with_split(self, split: Split | None) -> Rollout:
        """A new split (or none) replaces the old one and its rollback history."""
        return replace(self, split=split, rollbacks=())

    def with_shadow(self, shadow: ShadowSpec | None) -> Rollout:
        return replace(self, shadow=shadow)


def model_name(ref: str) -> str:
    from skylift.registry import parse_ref

    return parse_ref(ref).name


def from_flags(
    refs: Sequence[str],
    splits: Sequence[str] = (),
    shadows: Sequence[str] = (),
    guard: str | None = None,
    sticky_header: str | None = None,
) -> tuple[Rollout, ...]:
    """The rollouts of `skylift serve REF... --split [NAME:]1=90,2=10 --shadow [NAME:]3 --guard ...
    --sticky-header H` (the guard and header apply to every split). SpecError names the flag."""
    names = [model_name(ref) for ref in refs]
    if (guard is not None or sticky_header is not None) and not splits:
        flag = "--guard" if guard is not None else "--sticky-header"
        raise SpecError(f"{flag} applies to a split: give --split too, e.g. --split 1=90,2=10")
    rule = Guard.parse(guard) if guard is not None else None
    found: dict[str, Rollout] = {}
    for text in splits:
        name, rest = _target(text, names, "--split")
        if found.get(name, Rollout(name)).split is not None:
            raise SpecError(f"--split is given twice for {name}")
        split = Split.parse(rest, sticky_header, rule)
        found[name] = replace(found.get(name, Rollout(name)), split=split)
    for text in shadows:
        name, rest = _target(text, names, "--shadow")
        if found.get(name, Rollout(name)).shadow is not None:
            raise SpecError(f"--shadow is given twice for {name}")
        found[name] = replace(found.get(name, Rollout(name)), shadow=ShadowSpec.parse(rest))
    return tuple(found.values())


def _target(text: str, names: list[str], flag: str) -> tuple[str, str]:
    """(model name, the rest) of `[NAME:]REST`; the name may be left out when one model is served."""
    name, sep, rest = text.rpartition(":")
    if sep:
        if name not in names:
            raise SpecError(f"{flag} {text}: {name!r:.70} is not a served model (serving {', '.join(names)})")
        return name, rest
    if len(set(names)) != 1:
        raise SpecError(f"{flag} {text}: name the model when serving several, e.g. {flag} {names[0]}:{text}")
    return names[0], text


def check(registry: Registry, rollout: Rollout, primary: int, runtime: str = "torch") -> None:
    """SpecError (ModelNotFound) unless every version of `rollout` exists, is servable and has the
    signature of the served version `primary`; nothing is loaded."""
    from skylift.serve.runtimes import check_servable, kind_of

    name = rollout.model
    if rollout.empty:  # nothing to route (a DELETE)
        return
    if rollout.shadow is not None and rollout.split is None and rollout.shadow.version == primary:
        raise SpecError(f"{name}:{primary} answers the requests: it cannot also shadow them")
    base = registry.info(f"{name}:{primary}")
    kind = kind_of(base)
    # Each exists (ModelNotFound: exit 2 / 404) before any is compared.
    infos = {v: base if v == primary else registry.info(f"{name}:{v}") for v in rollout.versions}
    for version, info in infos.items():
        ref = f"{name}:{version}"
        check_servable(info, ref, runtime)
        _same_signature(info, base, ref, f"{name}:{primary}")
    if kind == "generator":
        raise SpecError(
            f"{name} is a generator: splits and shadows route KServe V2 and TF-Serving requests, "
            "which generators do not answer"
        )
    if rollout.shadow is not None and kind not in AGREEMENT:
        raise SpecError(f"{name} is a {kind}: shadows compare {', '.join(AGREEMENT)} answers")


def _same_signature(info: dict[str, Any], base: dict[str, Any], ref: str, base_ref: str) -> None:
    mine, theirs = info.get("signature") or {}, base.get("signature") or {}
    if mine.get("inputs") != theirs.get("inputs"):
        raise SpecError(
            f"{ref} takes {_tensors(mine.get('inputs'))} but {base_ref} takes "
            f"{_tensors(theirs.get('inputs'))}: the inputs would not fit"
        )
    if mine != theirs:
        differs = sorted(k for k in {*mine, *theirs} if mine.get(k) != theirs.get(k))
        raise SpecError(
            f"{ref} answers other {', '.join(differs)} than {base_ref}: clients would get answers "
            "of another shape depending on the version drawn"
        )


def _tensors(inputs: Any) -> str:
    if not isinstance(inputs, list):
        return "unknown inputs"
    return ", ".join(
        f"{t.get('name')} {t.get('datatype')} {t.get('shape')}" for t in inputs if isinstance(t, dict)
    )


def check_config(config: ServeConfig) -> None:
    """`check` every rollout of the command line against the version its model reference resolves to."""
    from skylift.registry import Registry

    registry = Registry(config.home, config.master_key)
    served = {model_name(ref): ref for ref in config.models}
    for rollout in config.rollouts:
        _, version = registry.resolve(served[rollout.model])
        check(registry, rollout, version, config.runtime)
