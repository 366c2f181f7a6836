"""The base of every typed config (run, loss, generate): pydantic v2 models, errors by key path.

A config is plain data validated at the edge. :class:`ConfigModel` refuses unknown keys and
non-finite numbers (``.inf``/``.nan`` in YAML, ``inf``/``nan`` in TOML, ``NaN`` in JSON, and
inside free-form ``Json`` data too), takes no string for a number (nor a number for a
boolean), and reads an explicit ``null`` as "the default" for a key that cannot be null.
:func:`validate` also refuses a number too big for float32, which a tensor would hold as
infinity. :func:`error_lines` turns
pydantic's :class:`~pydantic.ValidationError` into one line per problem, each naming the
dotted key path and, for a choice or an unknown key, the allowed values::

    run.yaml: train.precision: 'fp16' is not allowed (allowed: fp32, bf16)

Cross-field rules are ``model_validator`` methods that raise :class:`InvalidConfigError` with a
message that names its own key paths; such a message is passed through as it is.

>>> from kd_train.typed_config import ConfigModel, Float, InvalidConfigError, validate
>>> class Demo(ConfigModel):
...     lr: Float = 0.1
>>> validate(Demo, {"lr": float("nan")}, InvalidConfigError, "demo.yaml")
Traceback (most recent call last):
...
kd_train.typed_config.InvalidConfigError: demo.yaml: lr: must be a finite number, got nan
"""

from __future__ import annotations

import functools
import inspect
import operator
import re
import types
from collections.abc import Iterator, Mapping
from pathlib import PurePath
from typing import TYPE_CHECKING, Annotated, Any, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Strict,
    Tag,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import ErrorDetails, core_schema
from typing_extensions import TypeAliasType

from kd_train.errors import KDTrainError

#: Union members are tagged with names that start with this mark; the mark keeps them out of
#: the key paths of error messages.
TAG = "#"

#: A boolean that must be written ``true``/``false`` (``1`` is refused).
Bool = Annotated[bool, Strict()]
#: An integer (a boolean or a float is refused).
Int = Annotated[int, Strict()]
#: A finite number; an integer is taken as a float, a string is refused.
Float = Annotated[float, Strict()]
#: A string.
Str = Annotated[str, Strict()]


def json_kind(value: Any) -> str | None:
    """The tag of a free-form JSON value's kind (``None`` for a value JSON cannot hold)."""
    kinds: tuple[tuple[type, str], ...] = ((bool, "bool"), (int, "int"), (float, "float"))
    kinds += ((str, "str"), (list, "list"), (Mapping, "dict"), (type(None), "null"))
    return next((TAG + name for kind, name in kinds if isinstance(value, kind)), None)


#: Free-form data (e.g. a ``transformers`` config): JSON values, every number finite, an
#: error naming the key path inside it (``student.config.initializer_range``).
if TYPE_CHECKING:  # a recursive alias is beyond mypy; its values are JSON data
    Json = Any
else:
    Json = TypeAliasType(
        "Json",
        Annotated[
            Annotated[bool, Tag(TAG + "bool")]
            | Annotated[int, Strict(), Tag(TAG + "int")]
            | Annotated[float, Tag(TAG + "float")]
            | Annotated[str, Tag(TAG + "str")]
            | Annotated[list["Json"], Tag(TAG + "list")]
            | Annotated[dict[str, "Json"], Tag(TAG + "dict")]
            | Annotated[None, Tag(TAG + "null")],
            Discriminator(json_kind),
            WithJsonSchema({}),  # any JSON value (the finite check is the validator's)
        ],
    )


def path_text(value: Any) -> Any:
    """A :class:`~pathlib.PurePath` as its string; any other value as it is."""
    return str(value) if isinstance(value, PurePath) else value


#: A file or directory path, kept as a string (a :class:`~pathlib.Path` is accepted too).
PathStr = Annotated[str, BeforeValidator(path_text), Strict()]


class InvalidConfigError(KDTrainError, ValueError):
    """A config is malformed; the message names the key path and what is allowed.

    It is a :class:`ValueError` too, so that a ``model_validator`` may raise it and pydantic
    collects it with the other problems.
    """


class OneOf:
    """Annotation for a string that must be one of ``allowed`` (a JSON Schema ``enum``).

    >>> from typing import Annotated
    >>> from pydantic import TypeAdapter
    >>> from kd_train.typed_config import OneOf
    >>> TypeAdapter(Annotated[str, OneOf(("ddp", "fsdp"))]).validate_python("fsdp")
    'fsdp'
    """

    def __init__(self, allowed: tuple[str, ...]) -> None:
        """Remember the allowed values, in the order messages list them."""
        self.allowed = allowed

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        """The schema: a literal choice among :attr:`allowed`."""
        return core_schema.literal_schema(list(self.allowed))


class ConfigModel(BaseModel):
    """Base of every config section: frozen, unknown keys and non-finite numbers refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """Show plain types in the signature (no validation metadata) to readers and docs."""
        super().__pydantic_init_subclass__(**kwargs)
        signature = inspect.signature(cls)
        params = [
            p.replace(annotation=plain_type(p.annotation)) for p in signature.parameters.values()
        ]
        cls.__signature__ = signature.replace(parameters=params)

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        """An explicit ``null`` for a key that cannot be null stands for its default."""
        if not isinstance(data, Mapping):
            return data
        fields = cls.model_fields
        return {
            key: value
            for key, value in data.items()
            if value is not None or key not in fields or _nullable(fields[key].annotation)
        }


def plain_type(annotation: Any) -> Any:
    """``annotation`` without its ``Annotated`` metadata, at every depth.

    >>> from typing import Annotated
    >>> from kd_train.typed_config import Int, plain_type
    >>> plain_type(dict[str, Int | None])
    dict[str, int | None]
    """
    if isinstance(annotation, TypeAliasType):  # Json: free-form data
        return Any
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return plain_type(args[0])
    if not args:
        return annotation
    inner = tuple(plain_type(a) for a in args)
    if origin in (Union, types.UnionType):
        return functools.reduce(operator.or_, inner)
    return origin[inner]


def _nullable(annotation: Any) -> bool:
    return annotation is None or type(None) in get_args(annotation)


def validate(
    model: type[BaseModel], data: Any, error: type[KDTrainError], source: str = "", prefix: str = ""
) -> Any:
    """Validate ``data`` into ``model``; raise ``error`` with one line per problem.

    Args:
        model: the config class.
        data: plain data (a parsed YAML/TOML/JSON mapping).
        error: the exception to raise (the package's config error type).
        source: the file (or ``"flags"``) the data came from; it starts every line.
        prefix: the key path of ``data`` inside a bigger config (``"loss"``), if any.

    Returns:
        The validated instance of ``model``.
    """
    try:
        instance = model.model_validate(data)
    except ValidationError as exc:
        raise error("\n".join(error_lines(exc, model, source, prefix))) from None
    lead = f"{source}: " if source else ""
    too_big = [
        f"{lead}{key_path(loc)}: must be at most {FLOAT32_MAX:.4g} in size (a float32 tensor "
        f"would hold it as infinity), got {value!r}"
        for loc, value in beyond_float32(instance, [prefix] if prefix else [])
    ]
    if too_big:
        raise error("\n".join(too_big))
    return instance


#: The largest finite float32; a config number beyond it would be infinite in a tensor.
FLOAT32_MAX = 3.4028234663852886e38


def beyond_float32(value: Any, loc: list[int | str]) -> Iterator[tuple[list[int | str], float]]:
    """Every float in a validated config (at any depth) too big for float32, with its location.

    >>> from kd_train.typed_config import beyond_float32
    >>> list(beyond_float32({"optim": {"lr": 1e39, "betas": (0.9, 1e40)}}, []))
    [(['optim', 'lr'], 1e+39), (['optim', 'betas', 1], 1e+40)]
    """
    if isinstance(value, float) and abs(value) > FLOAT32_MAX:
        yield loc, value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from beyond_float32(getattr(value, name), [*loc, name])
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from beyond_float32(item, [*loc, str(key)])
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from beyond_float32(item, [*loc, i])


def error_lines(
    exc: ValidationError, model: type[BaseModel], source: str = "", prefix: str = ""
) -> list[str]:
    """One ``<source>: <key.path>: <message>`` line per problem of ``exc``.

    ``model`` is the class validated at the root of the key paths (found at ``prefix`` in
    the whole config); its JSON Schema tells which keys are allowed where a key is unknown.
    """
    lead = f"{source}: " if source else ""
    lines: list[str] = []
    for err in exc.errors():
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, KDTrainError):  # a rule's message names its own key paths
            lines += [lead + line for line in str(cause).splitlines()]
            continue
        loc = [p for p in err["loc"] if p != "[key]" and not str(p).startswith(TAG)]
        where = key_path([*([prefix] if prefix else []), *loc])
        lines.append(f"{lead}{where}: {describe(err, loc, model)}")
    return lines


def key_path(loc: list[int | str]) -> str:
    """The dotted key path of a pydantic location (list indices as ``[i]``).

    >>> from kd_train.typed_config import key_path
    >>> key_path(["loss", "hidden", "layer_map", 0])
    'loss.hidden.layer_map[0]'
    """
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "config"


def describe(err: ErrorDetails, loc: list[int | str], model: type[BaseModel]) -> str:
    """The message of one pydantic error, in this package's words."""
    kind, value, ctx = err["type"], err["input"], err.get("ctx", {})
    bound = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<"}
    bound["less_than_equal"] = "<="
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return f"unknown key (allowed: {', '.join(allowed_keys(model, loc[:-1]))})"
    if kind == "literal_error":
        choices = ", ".join(re.findall(r"'([^']*)'", str(ctx.get("expected", ""))))
        if err["loc"] and err["loc"][-1] == "[key]":
            return f"unknown key (allowed: {choices})"
        return f"{value!r} is not allowed (allowed: {choices})"
    if kind == "missing":
        return (
            "item missing (too few items)"
            if loc and isinstance(loc[-1], int)
            else "required key is missing"
        )
    if kind in bound:
        limit = next(iter(ctx.values()))
        return f"must be {bound[kind]} {limit}, got {value!r}"
    if kind in ("too_short", "too_long"):
        size = ctx.get("min_length" if kind == "too_short" else "max_length")
        word = "at least" if kind == "too_short" else "at most"
        return f"must have {word} {size} item(s), got {ctx.get('actual_length')}"
    if kind == "union_tag_not_found" and ctx.get("discriminator") == "json_kind()":
        return f"must be JSON data (number, string, boolean, null, list, table), got {value!r}"
    if kind == "finite_number":
        return f"must be a finite number, got {value!r}"
    return _type_message(kind, value) or err["msg"]


_TYPES = {
    "float_type": "a number",
    "int_type": "an integer",
    "bool_type": "true or false",
    "string_type": "a string",
    "model_type": "a table/mapping",
    "model_attributes_type": "a table/mapping",
    "dict_type": "a table/mapping",
    "tuple_type": "a list",
    "list_type": "a list",
}


def _type_message(kind: str, value: Any) -> str | None:
    want = _TYPES.get(kind)
    if want is None:
        return None
    if want == "a table/mapping" or want == "a list":
        return f"must be {want}, got {type(value).__name__}"
    return f"must be {want}, got {value!r}"


def allowed_keys(model: type[BaseModel], loc: list[int | str]) -> list[str]:
    """The keys allowed in the mapping at ``loc`` of ``model``, from its JSON Schema."""
    root = schema_of(model)
    nodes = [root]
    for part in loc:
        nodes = [child for node in nodes for child in _children(root, node, part)]
    return sorted({key for node in nodes for key in _properties(root, node)})


@functools.cache
def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema (validation form) of ``model``, computed once."""
    return model.model_json_schema()


def _resolve(root: dict[str, Any], node: dict[str, Any]) -> list[dict[str, Any]]:
    if "$ref" in node:
        node = root["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    options = node.get("anyOf", node.get("oneOf"))
    if options is None:
        return [node]
    return [leaf for option in options for leaf in _resolve(root, option)]


def _children(root: dict[str, Any], node: dict[str, Any], part: int | str) -> list[dict[str, Any]]:
    out = []
    for leaf in _resolve(root, node):
        if isinstance(part, int):
            items = leaf.get("prefixItems", [])
            out += [items[part]] if part < len(items) else [leaf.get("items", {})]
        elif part in leaf.get("properties", {}):
            out.append(leaf["properties"][part])
        elif isinstance(leaf.get("additionalProperties"), dict):
            out.append(leaf["additionalProperties"])
    return out


def _properties(root: dict[str, Any], node: dict[str, Any]) -> list[str]:
    return [key for leaf in _resolve(root, node) for key in leaf.get("properties", {})]
