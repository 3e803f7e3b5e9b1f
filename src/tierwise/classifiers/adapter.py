"""A deployment's adapter: the prior's per-tier predicted quality, corrected by what this
deployment's own judge verdicts and users' feedback showed (``tierwise train --from-ledger``).

For each tier below the top one the adapter holds a linear correction on the logit of the
prior's predicted quality::

    q'ᵢ = σ(logit(qᵢ) + wᵢ·standardise(features) + bᵢ [+ text weightsᵢ])

where ``features`` are the compact learning features the ledger stores with every routed
request (:data:`tierwise.classifiers.learned.COMPACT_NAMES`: the prior's logits and the shape
features, never the text) and the optional text weights were learned from stored prompts
(only when ``ledger.store_prompts`` let the deployment keep them). The weights were pulled
towards zero while fitting, so with little evidence the adapter stays close to the prior. The
predicted qualities stay ordered (a cheaper tier never beats a costlier one) and the top tier
stays 1.

**Versions.** Adapters live in ``$TIERWISE_HOME/models/`` as ``local-0001.json``,
``local-0002.json`` …; the file ``active`` names the one in use. The setting
``classifier.model`` chooses what the learned classifier loads (:func:`resolve`):

* ``"active"`` (default): the version named in ``$TIERWISE_HOME/models/active``, else the
  shipped prior alone;
* ``"shipped"``: the shipped prior alone, whatever is active;
* ``"local-0003"``: that version;
* a path: an adapter file, or a prior artifact (``tierwise train --output …``).

``tierwise train --rollback`` makes the previously active version (or the shipped prior) active
again; ``tierwise train --list`` shows them all. A process reads the setting when it starts.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tierwise.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from tierwise.classifiers.learned import RouterModel

ADAPTER_FORMAT = "tierwise-adapter"
ADAPTER_VERSION = 1
ACTIVE_FILE = "active"
HISTORY_FILE = "history.jsonl"
SHIPPED = "shipped"
_VERSION = re.compile(r"^local-(\d{4,})$")
_EPS = 1e-4


def models_dir(home: Path) -> Path:
    return Path(home).expanduser() / "models"


@dataclass
class Adapter:
    """A loaded adapter (see the module's docstring)."""

    name: str
    prior: str  # the prior's tag (name@id) it was trained on
    tiers: list[str]
    mean: npt.NDArray[np.float64]
    scale: npt.NDArray[np.float64]
    weights: npt.NDArray[np.float64]  # (tiers − 1, features)
    bias: npt.NDArray[np.float64]  # (tiers − 1,)
    text_weights: npt.NDArray[np.float64] | None = None  # (vocabulary, tiers − 1)
    card: dict[str, Any] = field(default_factory=dict)
    source: str = "<memory>"

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<memory>") -> Adapter:
        import numpy as np

        from tierwise.classifiers.learned import COMPACT_NAMES, decode_array

        if data.get("format") != ADAPTER_FORMAT:
            raise ConfigError(f"{source}: not a tierwise adapter")
        if data.get("format_version") != ADAPTER_VERSION:
            raise ConfigError(
                f"{source}: adapter format version {data.get('format_version')!r} is not "
                f"supported (this tierwise reads version {ADAPTER_VERSION})"
            )
        if tuple(data.get("feature_names", ())) != COMPACT_NAMES:
            raise ConfigError(f"{source}: adapter features differ from this tierwise's")
        tiers = list(data["tiers"])
        weights = np.asarray(data["weights"], dtype=np.float64)
        bias = np.asarray(data["bias"], dtype=np.float64)
        mean = np.asarray(data["mean"], dtype=np.float64)
        scale = np.asarray(data["scale"], dtype=np.float64)
        k = len(tiers) - 1
        if weights.shape != (k, len(COMPACT_NAMES)) or bias.shape != (k,):
            raise ConfigError(f"{source}: adapter weight shapes do not match its tiers")
        if mean.shape != (len(COMPACT_NAMES),) or scale.shape != mean.shape:
            raise ConfigError(f"{source}: adapter scaling does not match its features")
        text = None
        if data.get("text_weights") is not None:
            text = decode_array(data["text_weights"]).astype(np.float64)
            if text.ndim != 2 or text.shape[1] != k:
                raise ConfigError(f"{source}: adapter text weights do not match its tiers")
        return cls(
            name=str(data["name"]),
            prior=str(data["prior"]),
            tiers=tiers,
            mean=mean,
            scale=scale,
            weights=weights,
            bias=bias,
            text_weights=text,
            card=dict(data.get("card", {})),
            source=source,
        )

    @classmethod
    def load(cls, path: Path) -> Adapter:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read adapter {path}: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: not a tierwise adapter")
        return cls.from_dict(data, str(path))

    def check(self, model: RouterModel, tiers: list[str]) -> None:
        """Refuse to combine with another prior or another tier list than it was trained for."""
        if self.prior != model.tag:
            raise ConfigError(
                f"{self.source}: adapter {self.name} was trained on the prior {self.prior}, "
                f"not {model.tag}; retrain it (tierwise train --from-ledger) or set "
                'classifier.model = "shipped"'
            )
        if self.tiers != list(tiers):
            raise ConfigError(
                f"{self.source}: adapter {self.name} was trained for tiers "
                f"{', '.join(self.tiers)}, this configuration has {', '.join(tiers)}; retrain it"
            )
        if self.text_weights is not None and self.text_weights.shape[0] != len(model.vocab):
            raise ConfigError(f"{self.source}: adapter text weights do not match the prior")

    def __post_init__(self) -> None:
        # the standardisation folded into the weights: one dot product per decision
        self._w = self.weights / self.scale
        self._b = self.bias - self._w @ self.mean

    def apply(self, quality: list[float], compact: list[float], text: list[float]) -> list[float]:
        """The corrected per-tier quality (cheapest first; the top tier stays 1)."""
        shift = (self._w @ compact + self._b).tolist()
        out = list(quality)
        for i, delta in enumerate(shift):
            q = min(1.0 - _EPS, max(_EPS, quality[i]))
            z = math.log(q / (1.0 - q)) + delta + (text[i] if text else 0.0)
            out[i] = 1.0 / (1.0 + math.exp(-z)) if z > -500 else 0.0
        for i in range(len(out) - 2, -1, -1):  # a cheaper tier never beats a costlier one
            out[i] = min(out[i], out[i + 1])
        return out


# -- the versions in $TIERWISE_HOME/models ------------------------------------------------------
def versions(home: Path) -> list[str]:
    """Adapter versions on disk, oldest first."""
    folder = models_dir(home)
    if not folder.is_dir():
        return []
    found = [p.stem for p in folder.glob("local-*.json") if _VERSION.match(p.stem)]
    return sorted(found, key=lambda n: int(n.split("-")[1]))


def next_version(home: Path) -> str:
    existing = versions(home)
    number = int(existing[-1].split("-")[1]) + 1 if existing else 1
    return f"local-{number:04d}"


def version_path(home: Path, name: str) -> Path:
    return models_dir(home) / f"{name}.json"


def active(home: Path) -> str:
    """The active version's name, or ``"shipped"``."""
    path = models_dir(home) / ACTIVE_FILE
    try:
        name = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return SHIPPED
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if name != SHIPPED and not _VERSION.match(name):
        raise ConfigError(f"{path}: names {name!r}, which is not an adapter version")
    return name


def _record(home: Path, event: str, name: str, previous: str) -> None:
    folder = models_dir(home)
    line = {
        "ts": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "event": event,
        "active": name,
        "previous": previous,
    }
    with (folder / HISTORY_FILE).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")


def set_active(home: Path, name: str, event: str = "activate") -> str:
    """Make ``name`` (a version or ``"shipped"``) active; returns the previous one."""
    if name != SHIPPED and not version_path(home, name).is_file():
        raise ConfigError(f"no adapter {name} in {models_dir(home)}")
    folder = models_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    previous = active(home)
    tmp = folder / f".{ACTIVE_FILE}.{os.getpid()}"
    tmp.write_text(name + "\n", encoding="utf-8")
    tmp.replace(folder / ACTIVE_FILE)
    _record(home, event, name, previous)
    return previous


def history(home: Path) -> list[dict[str, Any]]:
    path = models_dir(home) / HISTORY_FILE
    if not path.is_file():
        return []
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
    return out


def rollback(home: Path) -> tuple[str, str]:
    """Make the version that was active before the current one active again (the shipped
    prior when there was none); returns (from, to)."""
    current = active(home)
    if current == SHIPPED:
        raise ConfigError("nothing to roll back: the shipped prior is already active")
    target = SHIPPED
    for event in reversed(history(home)):
        if event.get("active") == current and event.get("event") == "activate":
            target = str(event.get("previous") or SHIPPED)
            break
    if target != SHIPPED and not version_path(home, target).is_file():
        target = SHIPPED
    set_active(home, target, event="rollback")
    return current, target


def resolve(settings: Any) -> tuple[RouterModel, Adapter | None]:
    """The prior and adapter that ``classifier.model`` names (see the module's docstring)."""
    from tierwise.classifiers.learned import ARTIFACT_FORMAT, RouterModel, default_model

    spec = str(getattr(settings.classifier, "model", "active") or "active").strip()
    home = Path(settings.home)
    if spec == SHIPPED:
        return default_model(), None
    if spec == "active":
        name = active(home)
        if name == SHIPPED:
            return default_model(), None
        return default_model(), Adapter.load(version_path(home, name))
    if _VERSION.match(spec):
        path = version_path(home, spec)
        if not path.is_file():
            raise ConfigError(f"classifier.model: no adapter {spec} in {models_dir(home)}")
        return default_model(), Adapter.load(path)
    path = Path(spec).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(
            f"classifier.model: {spec!r} is not 'active', 'shipped', a version (local-0001) "
            f"or a readable file ({exc.strerror})"
        ) from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"classifier.model: {path} is not valid JSON: {exc}") from exc
    if isinstance(data, dict) and data.get("format") == ARTIFACT_FORMAT:
        return RouterModel(data, str(path)), None
    if isinstance(data, dict):
        return default_model(), Adapter.from_dict(data, str(path))
    raise ConfigError(f"classifier.model: {path} is neither a router artifact nor an adapter")
