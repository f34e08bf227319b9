"""A small instance valid against a JSON Schema: what the stub server (and the fake LLM's tests) reply to a request
that asks for structured output."""

from __future__ import annotations

import math
from typing import Any


def schema_instance(schema: dict) -> Any:
    """A small instance valid against ``schema`` (the JSON Schema subset LLM servers use).

    Objects get required and (non-recursive) optional properties, arrays
    max(1, minItems) items, strings "stub answer N" within min/maxLength,
    enums their first value; local $ref, allOf, anyOf/oneOf are followed.
    """
    counter = [0]

    def resolve(ref: str) -> dict:  # local refs only: "#/$defs/Name"
        node: Any = schema
        for part in filter(None, ref.lstrip("#").split("/")):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def gen(s: Any, depth: int, refs: tuple) -> Any:
        if not isinstance(s, dict) or not s:
            return "stub"
        if "$ref" in s:
            rest = {k: v for k, v in s.items() if k != "$ref"}
            return gen({**resolve(s["$ref"]), **rest}, depth, refs + (s["$ref"],))
        if "const" in s:
            return s["const"]
        if s.get("enum"):
            return s["enum"][0]
        if "allOf" in s:
            merged: dict = {k: v for k, v in s.items() if k != "allOf"}
            for sub in s["allOf"]:
                for k, v in (resolve(sub["$ref"]) if "$ref" in sub else sub).items():
                    if k == "properties":
                        merged[k] = {**merged.get(k, {}), **v}
                    elif k == "required":
                        merged[k] = [*merged.get(k, []), *v]
                    else:
                        merged.setdefault(k, v)
            return gen(merged, depth, refs)
        opts = s.get("anyOf") or s.get("oneOf")
        if opts:
            non_null = [o for o in opts if not (isinstance(o, dict) and o.get("type") == "null")]
            return gen((non_null or opts)[0], depth, refs)
        typ = s.get("type")
        if isinstance(typ, list):
            typ = next((t for t in typ if t != "null"), "null")
        if typ is None:
            typ = ("object" if "properties" in s or "required" in s
                   else "array" if "items" in s or "prefixItems" in s else "string")
        if typ == "object":
            props, required = s.get("properties", {}), list(s.get("required", []))
            out = {}
            for name in required + [p for p in props if p not in required]:
                sub = props.get(name, {})  # optional props too, unless deep or recursive
                if name in required or not (depth > 6 or (isinstance(sub, dict) and sub.get("$ref") in refs)):
                    out[name] = gen(sub, depth + 1, refs)
            while len(out) < s.get("minProperties", 0):
                out[f"extra_{len(out)}"] = "stub"
            return out
        if typ == "array":
            n = min(max(1, int(s.get("minItems", 0))), int(s.get("maxItems", 1 << 30)))
            prefix, items = s.get("prefixItems") or [], s.get("items", {})
            return [gen(prefix[i] if i < len(prefix) else items, depth + 1, refs) for i in range(n)]
        if typ == "string":
            counter[0] += 1
            text = f"stub answer {counter[0]}"
            text += "x" * max(0, int(s.get("minLength", 0)) - len(text))
            return text[: int(s["maxLength"])] if "maxLength" in s else text
        if typ in ("integer", "number"):
            lo, hi = s.get("minimum"), s.get("maximum")
            if isinstance(s.get("exclusiveMinimum"), (int, float)) and not isinstance(s["exclusiveMinimum"], bool):
                lo = max(lo if lo is not None else -math.inf, s["exclusiveMinimum"] + (1 if typ == "integer" else 0.5))
            if isinstance(s.get("exclusiveMaximum"), (int, float)) and not isinstance(s["exclusiveMaximum"], bool):
                hi = min(hi if hi is not None else math.inf, s["exclusiveMaximum"] - (1 if typ == "integer" else 0.5))
            v = min(max(1, lo if lo is not None else 1), hi if hi is not None else math.inf)
            return int(math.ceil(v)) if typ == "integer" else v
        return True if typ == "boolean" else None

    return gen(schema, 0, ())
