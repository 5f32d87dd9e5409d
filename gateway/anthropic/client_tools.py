"""Anthropic-schema client tools as function tools (issue 15 item 2).

Pure: no aiohttp, no asyncio. ``bash_*``, ``text_editor_*``, ``memory_*`` and ``computer_*``
tools are defined by Anthropic, not by the client: the request names a versioned ``type`` and
the model knows the input schema. The client still runs them. An OpenAI model knows none of
them, so each goes upstream as a function under the same name, with the input schema the
documentation publishes for that version and a description of what it does (the definition's
options, such as the screen size or ``max_characters``, are said there). Calls come back under
that name with the model's input, unchanged: the client runs them as it would for Claude.

Written from Anthropic's tool documentation (bash, text editor, memory, computer use); the
versions differ in the editor's commands (``undo_edit`` until 20250124, the text of ``insert``
as ``insert_text`` from 20250728) and the computer's actions (2025-01-24 added scrolling,
dragging and waits; 2025-11-24 ``zoom`` when ``enable_zoom``).
"""

from __future__ import annotations

from typing import Any, Final

from ..schemas.anthropic import Tool

_STR: Final = {"type": "string"}
_XY: Final = {"type": "array", "items": {"type": "integer", "minimum": 0},
              "minItems": 2, "maxItems": 2}  # fmt: skip
_RANGE: Final = {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2}

BASH: Final = {
    "type": "object",
    "properties": {
        "command": {**_STR, "description": "The bash command to run. Required unless the "
                    "tool is being restarted."},
        "restart": {"type": "boolean", "description": "Set to true to restart the bash "
                    "session."},
    },
}  # fmt: skip
BASH_TEXT: Final = (
    "Run commands in a persistent bash shell: the working directory and environment persist "
    "between calls. Avoid commands that produce very large output or wait for input; run "
    "long-lived processes in the background."
)


def _editor(*, undo: bool, insert_text: bool) -> dict[str, Any]:
    commands = ["view", "create", "str_replace", "insert"] + (["undo_edit"] if undo else [])
    props: dict[str, Any] = {
        "command": {"type": "string", "enum": commands, "description": (
            "view: show a file with line numbers, or list a directory two levels deep; "
            "create: write a new file; str_replace: replace one exact occurrence of old_str; "
            "insert: insert text after line insert_line"
            + ("; undo_edit: revert the last edit to the file" if undo else "")
        )},
        "path": {**_STR, "description": "Absolute path of the file or directory."},
        "file_text": {**_STR, "description": "create: the whole content of the new file."},
        "old_str": {**_STR, "description": "str_replace: the text to replace; it must match "
                    "exactly one place, whitespace included."},
        "new_str": {**_STR, "description": "str_replace: the replacement text"
                    + ("." if insert_text else "; insert: the text to insert.")},
        "insert_line": {"type": "integer", "minimum": 0, "description": "insert: the line "
                        "after which to insert (0: the start of the file)."},
        "view_range": {**_RANGE, "description": "view: [start_line, end_line], 1-indexed "
                       "and inclusive; end_line -1 means the end of the file."},
    }  # fmt: skip
    if insert_text:
        props["insert_text"] = {**_STR, "description": "insert: the text to insert."}
    return {"type": "object", "properties": props, "required": ["command", "path"]}


EDITOR_TEXT: Final = (
    "View, create and edit plain-text files. view shows line numbers; create fails if the "
    "file exists; str_replace fails unless old_str matches exactly once."
)

MEMORY: Final = {
    "type": "object",
    "properties": {
        "command": {"type": "string", "enum": ["view", "create", "str_replace", "insert",
                    "delete", "rename"], "description": (
            "view(path[, view_range]) | create(path, file_text) | str_replace(path, old_str, "
            "new_str) | insert(path, insert_line, insert_text) | delete(path) | "
            "rename(old_path, new_path)")},
        "path": {**_STR, "description": "A path under /memories (all commands but rename)."},
        "view_range": {**_RANGE, "description": "view: optional [start_line, end_line]."},
        "file_text": {**_STR, "description": "create: the content to write."},
        "old_str": {**_STR, "description": "str_replace: the exact text to find (unique)."},
        "new_str": {**_STR, "description": "str_replace: the replacement text."},
        "insert_line": {"type": "integer", "minimum": 0, "description": "insert: the line "
                        "after which to insert (0: the start)."},
        "insert_text": {**_STR, "description": "insert: the text to insert."},
        "old_path": {**_STR, "description": "rename: the current path."},
        "new_path": {**_STR, "description": "rename: the new path."},
    },
    "required": ["command"],
}  # fmt: skip
MEMORY_TEXT: Final = (
    "A memory directory (/memories) that persists across conversations. ALWAYS VIEW YOUR "
    "MEMORY DIRECTORY BEFORE DOING ANYTHING ELSE, to check for earlier progress. As you make "
    "progress, record status, progress and thoughts in it: your context may be reset at any "
    "moment, and anything not in memory is lost."
)

_ACTIONS_2024: Final = ["key", "type", "mouse_move", "left_click", "left_click_drag",
                        "right_click", "middle_click", "double_click", "screenshot",
                        "cursor_position"]  # fmt: skip
_ACTIONS_2025: Final = [*_ACTIONS_2024, "left_mouse_down", "left_mouse_up", "scroll",
                        "hold_key", "wait", "triple_click"]  # fmt: skip


def _computer(version: str, tool: Tool) -> dict[str, Any]:
    if version == "20241022":
        return {
            "type": "object",
            "properties": {
                "action": {"type": "string", "enum": _ACTIONS_2024, "description": (
                    "key: press a key or combination (xdotool syntax, e.g. Return, ctrl+s); "
                    "type: type text; mouse_move: move to coordinate; left_click_drag: drag "
                    "from the cursor to coordinate; *_click: click at the cursor; screenshot; "
                    "cursor_position")},
                "coordinate": {**_XY, "description": "[x, y] in screenshot pixels "
                               "(mouse_move, left_click_drag)."},
                "text": {**_STR, "description": "type: the text; key: the key or combination."},
            },
            "required": ["action"],
        }  # fmt: skip
    zoom = version >= "20251124" and bool(tool.enable_zoom)
    props: dict[str, Any] = {
        "action": {"type": "string", "enum": _ACTIONS_2025 + (["zoom"] if zoom else []),
                   "description": (
            "key: press a key or combination (xdotool syntax); hold_key: hold keys for "
            "duration seconds; type: type text; cursor_position; mouse_move: move to "
            "coordinate; left_mouse_down / left_mouse_up: at the cursor; *_click: click at "
            "coordinate (or the cursor), text = modifier keys to hold; left_click_drag: from "
            "start_coordinate to coordinate; scroll: scroll_amount wheel clicks in "
            "scroll_direction at coordinate; wait: pause duration seconds; screenshot"
            + ("; zoom: a full-resolution view of region" if zoom else ""))},
        "coordinate": {**_XY, "description": "[x, y] in screenshot pixels from the top left."},
        "start_coordinate": {**_XY, "description": "left_click_drag: the [x, y] start."},
        "text": {**_STR, "description": "type: the text; key / hold_key: the keys; clicks "
                 "and scroll: modifier keys to hold (shift, ctrl, alt, super)."},
        "scroll_direction": {"type": "string", "enum": ["up", "down", "left", "right"]},
        "scroll_amount": {"type": "integer", "minimum": 0, "description": "scroll: wheel "
                          "clicks."},
        "duration": {"type": "number", "minimum": 0, "description": "hold_key / wait: "
                     "seconds."},
    }  # fmt: skip
    if zoom:
        props["region"] = {
            "type": "array",
            "items": {"type": "integer", "minimum": 0},
            "minItems": 4,
            "maxItems": 4,
            "description": "zoom: [x0, y0, x1, y1], top left and bottom right.",
        }
    return {"type": "object", "properties": props, "required": ["action"]}


def _computer_text(tool: Tool) -> str:
    text = (
        "Use a mouse and keyboard to interact with a computer, and take screenshots. Some "
        "applications take time to start: wait and take another screenshot. Consult a "
        "screenshot for coordinates before moving the cursor."
    )
    if tool.display_width_px and tool.display_height_px:
        text += f" The screen is {tool.display_width_px}x{tool.display_height_px} pixels."
    if tool.display_number is not None:
        text += f" The display number is {tool.display_number}."
    return text


def client_tool_function(tool: Tool) -> tuple[str, str, dict[str, Any]] | None:
    """``(name, description, parameters)`` for an Anthropic-schema client tool, or None when
    ``tool.type`` is not one (a version the gateway does not know is None too)."""
    kind = tool.type or ""
    family, _, version = kind.rpartition("_")
    if not version.isdigit():
        return None
    if family == "bash":
        return "bash", BASH_TEXT, BASH
    if family == "text_editor":
        old = version <= "20250124"
        name = "str_replace_editor" if old else "str_replace_based_edit_tool"
        text = EDITOR_TEXT
        if tool.max_characters:
            text += f" view output is cut at {tool.max_characters} characters: use view_range."
        return name, text, _editor(undo=old, insert_text=version >= "20250728")
    if family == "memory":
        return "memory", MEMORY_TEXT, MEMORY
    if family == "computer":
        return "computer", _computer_text(tool), _computer(version, tool)
    return None
