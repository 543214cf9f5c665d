"""Run configurations from YAML files and ``--set`` overrides.

A YAML file becomes one or more :class:`RunConfig` objects; nothing downstream sees raw dicts.
Unknown keys, wrong types and out-of-range values raise :class:`ConfigError`, whose message names the
field and the fix (the CLI prints it on one line and exits with status 2).

Three modules, one responsibility each: :mod:`metacompare.config.runconfig` holds the dataclasses (what
every other module imports), :mod:`metacompare.config.validation` the checks (which read the algorithm
registry), and this module turns mappings into checked configs. The names of all three are
importable from here.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from metacompare import files
from metacompare.algorithms import ALGORITHMS, canonical
from metacompare.errors import ConfigError
from metacompare.config.runconfig import (NOT_IN_RUN_ID, BudgetConfig, DigitsConfig, EvalProcedure, MamlPlusPlusConfig,
                                   MiniImagenetConfig, OmniglotConfig, RunConfig, UserDataConfig, identity_of)
from metacompare.config.validation import (AT_MOST, CHOICES, EXAMPLES_PER_BATCH, NON_NEGATIVE, OPTIONAL_FIELDS, POSITIVE,
                                    POSITIVE_FLOAT, _suggest, validate)

__all__ = ["AT_MOST", "CHOICES", "EXAMPLES_PER_BATCH", "NON_NEGATIVE", "NOT_IN_RUN_ID",
           "OPTIONAL_FIELDS", "POSITIVE", "POSITIVE_FLOAT", "BudgetConfig", "ConfigError", "DigitsConfig",
           "EvalProcedure", "MamlPlusPlusConfig", "MiniImagenetConfig", "OmniglotConfig", "RunConfig", "UserDataConfig",
           "dump", "expand", "identity_of",
           "load_experiment", "parse_override", "refuse_set_twice", "reported_accuracy", "validate", "with_overrides"]


def _coerce(where: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against a dataclass field annotation, converting only where lossless."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(where, value, inner[0])
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}; write e.g. {where.split('.')[-1]}: [a, b]")
        return tuple(_coerce(f"{where}[{i}]", v, args[0]) for i, v in enumerate(value))
    if dataclasses.is_dataclass(annotation):
        if value is None:
            return annotation()
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of fields, got {value!r}")
        return _build(annotation, value, prefix=f"{where}.")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            number = _number_text(value) if isinstance(value, str) else value  # iterations: 1e5, as YAML 1.1 reads it
            if isinstance(number, float) and number.is_integer():
                return int(number)
            raise ConfigError(f"{where}: expected a whole number, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str) and _number_text(value) is not None:  # YAML 1.1 reads 1e-3 (no dot) as text
            return _number_text(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected text, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {annotation!r} for {where}")


def _number_text(text: str) -> float | None:
    """``1e-3`` or ``1e5`` written without a dot, which YAML 1.1 reads as text; None for other text."""
    try:
        return float(text)
    except ValueError:
        return None


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"unknown field '{prefix}{key}'{_suggest(key, names)}; "
                              f"known fields: {', '.join(names)}")
        kwargs[key] = _coerce(f"{prefix}{key}", value, hints[key])
    return cls(**kwargs)



def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` from the command line; the value is read as YAML so numbers stay numbers."""
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected key=value, e.g. --set inner_lr=0.1")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def refuse_set_twice(options: dict[str, tuple[tuple[str, ...], Any]], overrides: typing.Sequence[str]) -> None:
    """Refuse a ``--set`` of a field that a command-line option given with it sets too (the option would
    name the experiment and the written config, the ``--set`` what trains). ``options``: each given
    option's name -> (the fields it sets, its value). Equal values for one field are no conflict."""
    for text in overrides:
        key, value = parse_override(text)
        for option, (fields, given) in options.items():
            for name in fields:
                same = key == name or name.startswith(key + ".") or key.startswith(name + ".")
                if same and not (key == name and str(value) == str(given)):
                    raise ConfigError(f"--set {text}: {option} {given} already decides {name}; give it once, "
                                      f"either as {option} or as --set {name}=...")


def _apply(values: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted key (``omniglot.rotations``) in a nested dict."""
    parts = key.split(".")
    target = values
    for part in parts[:-1]:
        nested = target.get(part)
        if nested is None:
            nested = target[part] = {}
        if not isinstance(nested, dict):
            raise ConfigError(f"--set {key}: '{part}' is not a section")
        target = nested
    target[parts[-1]] = value


def load_experiment(path: str | Path, overrides: typing.Sequence[str] = ()) -> list[RunConfig]:
    """Read a config file: one run, or one per algorithm when ``algorithm`` is a list.

    ``per_algorithm: {reptile: {inner_steps: 5}}`` sets fields for one algorithm only, because the
    papers tune Reptile and MAML differently. ``--set`` overrides apply last, to every run.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such config file; see configs/ for examples")
    raw = files.read_yaml(path, "fix the file (see configs/sine.yaml)",
                          empty="the config file is empty; set at least dataset and algorithm")
    return expand(raw, overrides, source=str(path))


def expand(raw: dict[str, Any], overrides: typing.Sequence[str] = (), source: str = "config") -> list[RunConfig]:
    """Turn one raw mapping (file contents) into validated run configs."""
    raw = dict(raw)
    per_algorithm = raw.pop("per_algorithm", None) or {}
    parsed = [parse_override(o) for o in overrides]
    for key, value in parsed:
        if key == "algorithm":
            raw["algorithm"] = value
    algorithms = raw.get("algorithm", RunConfig.algorithm)
    algorithms = list(algorithms) if isinstance(algorithms, (list, tuple)) else [algorithms]
    if not algorithms:
        raise ConfigError(f"{source}: algorithm: the list is empty; name at least one, e.g. algorithm: [maml]")
    if not all(isinstance(name, str) for name in algorithms):
        raise ConfigError(f"{source}: algorithm: expected a name or a list of names, got {algorithms!r}")
    if not isinstance(per_algorithm, dict):
        raise ConfigError(f"{source}: per_algorithm must map algorithm names to fields")
    algorithms = [canonical(name) for name in algorithms]  # a former name runs the algorithm it now names
    per_algorithm = {canonical(str(name)): fields for name, fields in per_algorithm.items()}
    _check_per_algorithm(per_algorithm, source)
    configs = []
    for name in algorithms:
        # an algorithm's own defaults (maml++: its cosine outer schedule), under what the file sets
        values = {**(ALGORITHMS[name].config_defaults if name in ALGORITHMS else {}), **raw}
        values["algorithm"] = name
        for key, value in (per_algorithm.get(name) or {}).items():
            values[key] = value
        for key, value in parsed:
            if key != "algorithm":
                _apply(values, key, value)
        try:
            configs.append(validate(_build(RunConfig, values)))
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None
    _check_same_episodes(configs, source)
    return configs


def _check_same_episodes(configs: list[RunConfig], source: str) -> None:
    """Refuse a comparison whose per_algorithm settings would give its algorithms different episodes
    (the one definition: :func:`metacompare.storage.provenance.check_same_episodes`)."""
    from metacompare.storage.provenance import check_same_episodes

    check_same_episodes(configs, f"{source}: ")


def _check_per_algorithm(per_algorithm: dict[str, Any], source: str) -> None:
    """Each ``per_algorithm`` key is a registered algorithm and maps to fields: a typo there would
    otherwise silently drop that algorithm's settings."""
    for name, fields in per_algorithm.items():
        if name not in ALGORITHMS:
            raise ConfigError(f"{source}: per_algorithm: unknown algorithm '{name}'{_suggest(str(name), ALGORITHMS)}; "
                              f"choose from {', '.join(sorted(ALGORITHMS))}")
        if fields is not None and not isinstance(fields, dict):
            raise ConfigError(f"{source}: per_algorithm.{name}: expected a mapping of fields, got {fields!r}; "
                              f"write e.g. per_algorithm: {{{name}: {{inner_lr: 0.1}}}}")


def with_overrides(cfg: RunConfig, **changes: Any) -> RunConfig:
    """A validated copy with some fields changed (sweeps use this)."""
    values = cfg.to_dict()
    for key, value in changes.items():
        _apply(values, key, value)
    values["algorithm"] = canonical(str(values["algorithm"]))  # a former name, in a RunConfig built in code too
    return validate(_build(RunConfig, values))


def dump(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def reported_accuracy(path: str | Path) -> dict[str, float]:
    """The published accuracies (%) a paper config cites in its ``# reported_accuracy: {algo: x}`` line.

    Kept in a comment so that the config itself stays a plain run description; ``report`` can draw
    these as reference marks. Empty when the file has no such line.
    """
    for line in Path(path).read_text().splitlines():
        if line.startswith("# reported_accuracy:"):
            values = yaml.safe_load(line.removeprefix("# reported_accuracy:"))
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: '# reported_accuracy:' must be followed by {{algorithm: percent}}")
            return {str(k): float(v) for k, v in values.items()}
    return {}
