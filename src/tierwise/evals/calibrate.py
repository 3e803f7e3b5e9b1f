"""``tierwise calibrate``: set the policy's one knob from a sample of your own prompts.

The knob is ``classifier.quality_tolerance``: the policy sends a request to the cheapest tier
whose predicted quality is within the tolerance of the best tier's. Given the per-tier
predicted qualities of a sample, the tier shares and the quality kept are exact functions of
the tolerance, so the knob is found by a sweep (0 … 1 in steps of 0.001):

* ``"30% top"``: the smallest tolerance that sends at most 30 % of the requests to the top tier;
* ``"95% quality"``: the largest tolerance whose expected quality stays at least 95 % of the
  best tier's (mean over requests of chosen-tier quality / best-tier quality).

Requests the knob does not decide keep the tier the policy gives them whatever the knob: those
below ``confidence_threshold`` go to the default tier (the learned classifier abstains with
confidence 0.4 on a request it knows no word of), and those without per-tier quality (another
classifier) go by their level. They are counted in the shares and left out of the quality
figure.
"""

from __future__ import annotations

import asyncio
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from tierwise.errors import ConfigError, InputError
from tierwise.router import Router

GRID = np.round(np.linspace(0.0, 1.0, 1001), 3)
Tick = Callable[[], None]


@dataclass(frozen=True, slots=True)
class Target:
    kind: Literal["top", "quality"]
    value: float  # 0–1

    def __str__(self) -> str:
        return f"{self.value:.0%} {'top' if self.kind == 'top' else 'quality'}"


_TARGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*(top|quality)\s*$", re.IGNORECASE)


def parse_target(text: str) -> Target:
    """``"30% top"`` (share of requests to the top tier) or ``"95% quality"`` (of the best)."""
    m = _TARGET.match(text)
    if not m:
        raise InputError(f'target {text!r}: expected "N% top" or "N% quality", e.g. "30% top"')
    value = float(m.group(1)) / 100.0
    if not 0.0 <= value <= 1.0:
        raise InputError(f"target {text!r}: the percentage must be between 0 and 100")
    kind: Literal["top", "quality"] = "top" if m.group(2).lower() == "top" else "quality"
    return Target(kind, value)


async def _qualities(
    router: Router, prompts: Sequence[tuple[str, str]], tick: Tick | None
) -> list[list[float] | int]:
    """Per prompt: its tiers' predicted quality when the knob decides it, else the index of the
    tier the policy sends it to whatever the knob."""
    names = router.settings.tier_names
    out: list[list[float] | int] = []
    for prompt, system in prompts:
        c = await router.classifier.classify(_input(prompt, system))
        d = router.policy.decide(c)
        q = c.tier_quality
        if d.rule == "quality" and q and all(n in q for n in names):
            out.append([float(q[n]) for n in names])
        else:
            out.append(names.index(d.tier))
        if tick is not None:
            tick()
    return out


def _input(prompt: str, system: str) -> Any:
    from tierwise.types import ClassifyInput

    return ClassifyInput(prompt, system)


def sweep(
    qualities: Sequence[list[float] | int], n_tiers: int
) -> dict[str, npt.NDArray[np.float64]]:
    """Tier shares (grid × tiers) and quality kept (grid) for every tolerance of the grid."""
    known = np.array([q for q in qualities if isinstance(q, list)], dtype=np.float64).reshape(
        -1, n_tiers
    )
    fixed = np.bincount(
        np.array([q for q in qualities if not isinstance(q, list)], dtype=np.int64),
        minlength=n_tiers,
    )
    total = len(qualities)
    shares = np.zeros((len(GRID), n_tiers))
    kept = np.ones(len(GRID))
    if len(known):
        best = known.max(axis=1, keepdims=True)
        for g, tol in enumerate(GRID):
            choice = (known >= best - tol - 1e-12).argmax(axis=1)
            shares[g] = np.bincount(choice, minlength=n_tiers)
            chosen = known[np.arange(len(known)), choice]
            kept[g] = float(np.mean(chosen / np.maximum(best[:, 0], 1e-12)))
    shares += fixed[:n_tiers]
    return {"shares": shares / max(total, 1), "kept": kept}


def choose(target: Target, curves: dict[str, npt.NDArray[np.float64]]) -> int:
    """Index into :data:`GRID` of the tolerance that meets the target."""
    if target.kind == "top":
        ok = np.flatnonzero(curves["shares"][:, -1] <= target.value + 1e-12)
        return int(ok[0]) if len(ok) else len(GRID) - 1
    ok = np.flatnonzero(curves["kept"] >= target.value - 1e-12)
    return int(ok[-1]) if len(ok) else 0


def calibrate(
    router: Router,
    prompts: Sequence[tuple[str, str]],
    target: Target,
    tick: Tick | None = None,
) -> dict[str, Any]:
    if not prompts:
        raise InputError("no prompts to calibrate on")
    names = router.settings.tier_names
    qualities = asyncio.run(_qualities(router, prompts, tick))
    curves = sweep(qualities, len(names))
    g = choose(target, curves)
    now = router.settings.classifier.quality_tolerance
    g_now = int(np.argmin(np.abs(GRID - now)))
    return {
        "target": str(target),
        "prompts": len(prompts),
        "not_decided_by_knob": sum(1 for q in qualities if not isinstance(q, list)),
        "quality_tolerance": float(GRID[g]),
        "tier_shares": {
            n: round(float(s), 4) for n, s in zip(names, curves["shares"][g], strict=True)
        },
        "quality_kept": round(float(curves["kept"][g]), 4),
        "current": {
            "quality_tolerance": now,
            "tier_shares": {
                n: round(float(s), 4) for n, s in zip(names, curves["shares"][g_now], strict=True)
            },
            "quality_kept": round(float(curves["kept"][g_now]), 4),
        },
    }


_SECTION = re.compile(r"^\s*\[([^\[\]]+)\]\s*(#.*)?$")
_KNOB = re.compile(r"^\s*quality_tolerance\s*=")


def write_knob(path: Path, tolerance: float) -> None:
    """Set ``[classifier] quality_tolerance`` in a TOML file, keeping everything else as is
    (creating the file or the table when missing)."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if text:
        try:
            tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    line = f"quality_tolerance = {tolerance:.3f}"
    lines = text.splitlines()
    section: str | None = None
    start: int | None = None
    for i, raw in enumerate(lines):
        m = _SECTION.match(raw)
        if m:
            section = m.group(1).strip()
            if section == "classifier":
                start = i
            continue
        if section == "classifier" and _KNOB.match(raw):
            lines[i] = line
            break
    else:
        if start is None:
            if lines and lines[-1].strip():
                lines.append("")
            lines += ["[classifier]", line]
        else:
            lines.insert(start + 1, line)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
