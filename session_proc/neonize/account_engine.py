"""The neonize engine's account operations: read receipts, presence, and calls (rejected when asked to).

A mixin of :class:`session_proc.neonize.engine.NeonizeEngine`. Nothing here calls neonize before
the device is connected or after ``stop()`` (a call into a Go client in either state aborts the
process), and the presence calls get only neonize's own enums (``session_proc.neonize.account``).

WhatsApp sends a contact's presence only to accounts that are ``available`` and subscribed to it:
the engine subscribes to a contact when it shows a chat state to it or reads its messages (as
WhatsApp's own clients do when a chat is opened); ``presence.update`` needs the account to have
sent ``available`` first.

A call offer is handed to the supervisor from whatsmeow's thread and the callback returns only
after the commit (whatsmeow acknowledges the offer when the callback returns), like a message.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from session_proc.engine import EngineError, IncomingCall, ReadMessage

if TYPE_CHECKING:
    from types import ModuleType

    from session_proc.engine import EngineContext

log = logging.getLogger("neonize.engine")

# A call offer could not be committed: the process ends without returning to whatsmeow (see engine.py).
EXIT_UNACKNOWLEDGED = 75


class NeonizeAccount:
    """Read receipts, presence and calls through neonize."""

    ctx: EngineContext
    deliver_wait: float
    _client: Any
    _connected: bool
    _stopping: threading.Event
    _incoming: ModuleType | None
    _account: ModuleType | None
    _loop: asyncio.AbstractEventLoop | None
    _subscribed: set[str]

    async def _call_go(self, fn: Callable[..., Any], *args: Any) -> Any:
        raise NotImplementedError

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        raise NotImplementedError

    def _online_client(self) -> tuple[Any, ModuleType, ModuleType]:
        """The Go client and the mapping modules while the device is connected; NOT_CONNECTED otherwise."""
        if self._client is None or self._account is None or self._incoming is None:
            raise EngineError("NOT_CONNECTED", "the engine has not started")
        if not self._connected or self._stopping.is_set():
            raise EngineError("NOT_CONNECTED", "the session is not connected to WhatsApp")
        return self._client, self._account, self._incoming

    def _jid(self, value: str) -> Any:
        assert self._incoming is not None
        try:
            return self._incoming.parse_jid(value)
        except ValueError as exc:
            raise EngineError("INVALID_RECIPIENT", str(exc)) from None

    async def mark_read(self, chat: str, messages: list[ReadMessage]) -> None:
        """Read receipts, one call per sender (``sender`` is required in groups)."""
        client, account, _ = self._online_client()
        chat_jid = self._jid(chat)
        by_sender: dict[str, list[str]] = {}
        for message in messages:
            by_sender.setdefault(message.sender or chat, []).append(message.id)
        for sender, ids in by_sender.items():
            call = functools.partial(
                client.mark_read, *ids, chat=chat_jid, sender=self._jid(sender), receipt=account.READ_RECEIPT
            )
            try:
                await self._call_go(call)
            except Exception as exc:
                raise EngineError("READ_FAILED", f"WhatsApp refused the read receipts: {exc}") from None
        await self._subscribe_presence(chat)

    async def send_presence(self, state: str, chat: str | None) -> None:
        """``available``/``unavailable`` for the account, else a chat state in ``chat``."""
        client, account, _ = self._online_client()
        try:
            if state in account.ACCOUNT_PRESENCE:
                await self._call_go(client.send_presence, account.ACCOUNT_PRESENCE[state])
                return
            if state not in account.CHAT_PRESENCE or chat is None:
                raise EngineError("INVALID_STATE", f"no chat presence {state!r} (or no chat)")
            chat_state, media = account.CHAT_PRESENCE[state]
            await self._call_go(client.send_chat_presence, self._jid(chat), chat_state, media)
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError("PRESENCE_FAILED", f"WhatsApp refused the presence: {exc}") from None
        await self._subscribe_presence(chat)

    async def _subscribe_presence(self, chat: str) -> None:
        """Ask for a contact's presence updates once per process (not for groups)."""
        if not chat.endswith("@s.whatsapp.net") or chat in self._subscribed:
            return
        client, _, _ = self._online_client()
        try:
            await self._call_go(client.subscribe_presence, self._jid(chat))
            self._subscribed.add(chat)
        except Exception as exc:
            log.info("presence of a contact not subscribed: %s", exc)

    # -- neonize callbacks (Go's thread) --------------------------------------------------------
    def _cb_chat_presence(self, _client: Any, event: Any) -> None:
        assert self._account is not None
        mapped = self._account.chat_presence(event)
        if mapped is not None:
            self._post(self.ctx.sink.on_chat_presence, *mapped)

    def _cb_presence(self, _client: Any, event: Any) -> None:
        assert self._account is not None
        self._post(self.ctx.sink.on_presence, *self._account.presence(event))

    def _cb_call_offer(self, _client: Any, event: Any) -> None:
        assert self._account is not None and self._loop is not None
        mapped = self._account.call_offer(event)
        if mapped is None:
            return
        call, caller = mapped
        try:
            future = asyncio.run_coroutine_threadsafe(self._take_call(call, caller), self._loop)
            future.result(self.deliver_wait)
        except Exception as exc:
            log.error("call %s not committed (%s): exiting unacknowledged, WhatsApp offers it again", call.id, exc)
            logging.shutdown()
            os._exit(EXIT_UNACKNOWLEDGED)

    async def _take_call(self, call: IncomingCall, caller: Any) -> None:
        """Commit the call; reject it when the supervisor says so, and commit that too."""
        if not await self.ctx.sink.on_call(call):
            return
        try:
            client, _, _ = self._online_client()
            await self._call_go(client.reject_call, caller, call.id)
        except Exception as exc:
            log.warning("call %s could not be rejected: %s", call.id, exc)
            return
        await self.ctx.sink.on_call_rejected(call.id, call.sender)
