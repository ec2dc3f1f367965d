"""JMESPath's built-in functions plus a few string helpers workflows need.

Pure functions over JSON values; nothing here can reach the host.
"""

from __future__ import annotations

from typing import Any

from jmespath import functions


class WorkflowFunctions(functions.Functions):
    @functions.signature({"types": ["string"]})
    def _func_upper(self, text: str) -> str:
        return text.upper()

    @functions.signature({"types": ["string"]})
    def _func_lower(self, text: str) -> str:
        return text.lower()

    @functions.signature({"types": ["string"]})
    def _func_trim(self, text: str) -> str:
        return text.strip()

    @functions.signature({"types": ["string"]}, {"types": ["string"]})
    def _func_split(self, text: str, separator: str) -> list[str]:
        return text.split(separator) if separator else list(text)

    @functions.signature({"types": ["string"]}, {"types": ["string"]}, {"types": ["string"]})
    def _func_replace(self, text: str, old: str, new: str) -> str:
        return text.replace(old, new)

    @functions.signature({"types": ["array"]}, {"types": ["number"]})
    def _func_take(self, items: list[Any], count: float) -> list[Any]:
        return items[: max(int(count), 0)]

    @functions.signature({"types": []})
    def _func_to_json(self, value: Any) -> str:
        import json

        return json.dumps(value, ensure_ascii=False, sort_keys=True)


FUNCTIONS = WorkflowFunctions()
FUNCTION_NAMES = frozenset(FUNCTIONS.FUNCTION_TABLE)
