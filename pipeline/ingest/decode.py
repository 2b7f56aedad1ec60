"""Decoding a bag's CDR messages leniently, with the bag's own message definitions.

Bags from other loggers carry message types we do not know (vendor messages), definitions that
do not parse, or messages whose CDR carries bytes after the last field (some serialisers pad or
append). rosbags' ``AnyReader`` refuses the whole bag for the first two and every such message
for the last. Here each type is resolved on its own: from the bag's definition when it has one
that parses, else from ROS 2 Jazzy's standard types; a type neither knows is *unknown*, which only
matters if a mapped field needs it. Decoding returns the number of trailing bytes so the caller
can count the repair (or refuse it under ``--strict``).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Any

from rosbags.interfaces import Connection, MessageDefinitionFormat
from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

# CDR pads a message to a multiple of 4 bytes; up to 3 bytes after the last field are normal.
_CDR_PADDING = 3
_IDL_SEPARATOR = "=" * 80 + "\n"


@cache
def _standard_types() -> Typestore:
    return get_typestore(Stores.ROS2_JAZZY)


def _parse(connection: Connection) -> dict[str, Any]:
    """The types a connection's embedded definition declares (empty when it has none)."""
    definition = connection.msgdef
    if definition.format == MessageDefinitionFormat.MSG:
        return dict(get_types_from_msg(definition.data, connection.msgtype))
    if definition.format == MessageDefinitionFormat.IDL:
        types: dict[str, Any] = {}
        chunks = definition.data.split(_IDL_SEPARATOR)[1:] if definition.data.startswith(_IDL_SEPARATOR) else []
        for chunk in chunks or [definition.data]:
            types.update(get_types_from_idl(chunk.split("\n", 1)[1] if chunks else chunk))
        return types
    return {}


class Decoder:
    """Per-type CDR decoders for one bag's connections."""

    def __init__(self, connections: Iterable[Connection]) -> None:
        self._bag_types = get_typestore(Stores.EMPTY)
        self._store: dict[str, Typestore] = {}
        self.problems: dict[str, str] = {}  # msgtype → why it cannot be decoded
        for connection in connections:
            msgtype = connection.msgtype
            if msgtype in self._store:
                continue
            try:
                types = _parse(connection)
                if types:
                    self._bag_types.register(types)
                    self._bag_types.get_msgdef(msgtype)  # every field type resolves
                    self._store[msgtype] = self._bag_types
                    continue
            except Exception as error:  # a definition that does not parse or contradicts another one
                self.problems[msgtype] = f"its message definition in the bag is unusable ({error})"
                continue
            if msgtype in _standard_types().fielddefs:
                self._store[msgtype] = _standard_types()
            else:
                self.problems[msgtype] = "the bag lacks its message definition and it is not a standard ROS 2 type"
        self._functions: dict[str, tuple[Any, Any, Any, Typestore]] = {}

    def known(self, msgtype: str) -> bool:
        """Whether messages of this type can be decoded."""
        return msgtype in self._store

    def decode(self, raw: bytes | memoryview, msgtype: str) -> tuple[Any, int]:
        """Decode one CDR message.

        Returns:
            The message, and how many bytes follow its last field (0 when no more than CDR's padding).

        Raises:
            ValueError: The data is not a valid CDR message of this type.
        """
        functions = self._functions.get(msgtype)
        if functions is None:
            store = self._store[msgtype]
            msgdef = store.get_msgdef(msgtype)
            functions = self._functions[msgtype] = (
                msgdef.deserialize_cdr_le,
                msgdef.deserialize_cdr_be,
                msgdef.cls,
                store,
            )
        little, big, cls, store = functions
        header = bytes(raw[:2])
        if len(raw) < 4 or header not in (b"\x00\x00", b"\x00\x01"):
            raise ValueError("invalid or unsupported CDR encapsulation")
        try:
            message, end = (little if header == b"\x00\x01" else big)(raw[4:], 0, cls, store)
        except Exception as error:  # struct.error, UnicodeDecodeError, IndexError, ... on truncated data
            raise ValueError(f"{type(error).__name__}: {error}") from error
        excess = len(raw) - 4 - end
        return message, excess if excess > _CDR_PADDING else 0
