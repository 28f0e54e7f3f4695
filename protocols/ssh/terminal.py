"""Command lines typed in an interactive SSH shell (PTY), reconstructed for the policy check.

A shell session carries no commands on the wire, only keystrokes one way and screen updates the
other. ``LineTracker`` (sans-IO) watches both: ``output(bytes)`` is what the server sends to the
terminal, ``input(bytes)`` what the user types. ``input`` splits the keystrokes at every Enter
(CR, LF, or CRLF counted once) and hands the Enter back as ``Enter(raw, line)``: the glue holds
those bytes until the policy has checked ``line`` and then forwards them, or sends
``CANCEL_BYTES`` instead (^E ^U CR: end of line, kill to its start, Enter on the now empty
line, so the shell drops the typed line and shows a fresh prompt). Every other byte comes back
as ``Forward(data)``, to pass on as it is.

Two views of the line are kept, and the policy checks both (``LineCheck.candidates``):

* ``keys``: the keystrokes replayed with readline's emacs bindings (insert at the cursor,
  BS/DEL, ^A ^E ^B ^F ^D ^K ^U ^W ^T, M-b M-f M-d M-DEL, arrows, Home/End/Delete in CSI and
  SS3 forms). Keys whose effect the gateway cannot know (TAB completion, ^R/^S search,
  ^P/^N/Up/Down history, ^Y yank, ^V, ^X prefixes, unknown escape sequences) mark the line
  ``uncertain``.
* ``screen``: the cursor's line as the terminal would show it when Enter is pressed, minus the
  prompt (what the line held left of the cursor at the line's first keystroke), minus a right
  prompt that stayed in place (zsh RPROMPT) and minus bash's ``(reverse-i-search)`x': ``
  prefix. It sees what completion and history recall put on the line. ``None`` when nothing
  was printed on the line since its first keystroke: echo is off (a password prompt).

``LineCheck.shown`` is what may be recorded: the screen text, never the keystrokes, so a
password typed with echo off is recorded as ``[input not echoed]``. The record must use
``shown``; ``candidates`` may hold such a password (with echo off the keystrokes are all there
is to check: ``stty -echo`` must not switch the checks off).

The screen model is one line: printable UTF-8 (one cell per code point, widths ignored), CR,
LF, BS, TAB, and the CSI sequences line editors redraw with (C, D, G, K, P, @, X; J as far as it
touches the line; save/restore cursor). Other CSI/ESC sequences and OSC/DCS strings are skipped
without printing; a vertical cursor move blanks the model (the line it lands on is unknown).
The alternate screen (CSI ?1049/?1047/?47 h/l) sets ``full_screen``: while it is on (vim,
less, top) ``input`` returns only ``Forward`` pieces and nothing is checked.

Bracketed-paste markers (ESC[200~, ESC[201~) are removed from what is forwarded, so the shell
sees a paste as typing and every pasted line ends in an Enter that is checked (a shell in paste
mode would take the lines as one buffer, and a denied line's cancel would land inside it).
A multi-line paste therefore runs line by line, as on a terminal without bracketed paste.
To strip a marker split across reads, an input chunk ending in a marker prefix (a lone ESC,
``ESC [``, ``ESC [2``...) keeps it until the next input: a lone ESC key reaches the program
with the next keystroke (not in full-screen mode, where nothing is held). A marker prefix cut
short by another ESC or a control byte is dropped (so ESC ESC reaches the program as one ESC):
passed on, it could join with the bytes after a stripped marker into a marker. What is
forwarded never holds a paste marker, whatever the input.

Limits (this is best effort; like every PTY command filter it can be evaded, so the policy must
not rely on it alone; Teleport's documentation gives the same warning):

* Anything a program reads from the terminal is checked line by line, whatever the program
  (a REPL, ``cat``, ``mysql``): the gateway cannot tell a shell prompt from another reader.
* A shell's own expansion is invisible: aliases, functions, ``$(...)``, ``eval``, scripts,
  history expansion (``!!``), ``fc``, vi mode, a custom ``inputrc`` or zsh widgets, ^X^E (edit
  in $EDITOR) and multi-line constructs (a line ending in ``\\``, here-documents) all run
  something else than the line checked.
* Nothing typed on the alternate screen is checked: not in vim or less, and not at a shell
  prompt either once anything has switched that screen on (``tput smcup``, ``printf
  '\\e[?1049h'``, a shell started from vim): a one-command way around every line check.
* The screen view depends on the echo having arrived: a user typing ahead of the echo gives a
  screen that lags the keys (``settle`` recomputes it once the echo is in). Wide characters,
  lines wrapped over several rows and zsh's search (shown below the line) spoil it; the keys
  view is then what the check relies on.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field

__all__ = ["CANCEL_BYTES", "NOT_ECHOED", "MAX_LINE", "Forward", "Enter", "LineCheck", "LineTracker"]

CANCEL_BYTES = b"\x05\x15\r"
NOT_ECHOED = "[input not echoed]"
# keystrokes (and screen cells) kept per line; past this the line is cut and uncertain
MAX_LINE = 64 * 1024
# an escape sequence longer than this is broken input, not a key or a redraw
_MAX_SEQ = 64

_PASTE_START = b"\x1b[200~"
_PASTE_END = b"\x1b[201~"
_MARKER_PREFIXES = frozenset(m[:i] for m in (_PASTE_START, _PASTE_END) for i in range(1, len(m)))

# the search prompt bash (readline) shows in place of the prompt; zsh's forms, should they
# share the line
_SEARCH_PREFIX = re.compile(r"\((?:failed )?(?:reverse-)?i-search\)`.*?': |(?:failing )?(?:bck|fwd)-i-search: ")
_OUT_SPECIAL = re.compile(rb"[\x00-\x1f\x7f]")
_OSC_END = re.compile(rb"[\x07\x18\x1a\x1b]")
_STR_END = re.compile(rb"[\x18\x1a\x1b]")
_TYPED_TEXT = re.compile(rb"[\x20-\x7e\x80-\xff]+")
_C1 = dict.fromkeys(range(0x80, 0xA0))
_ALT_MODES = frozenset((47, 1047, 1049))

# parser states (output and input share the numbering)
_GROUND, _ESC, _ESC_INTER, _CSI, _OSC, _OSC_ESC, _STR, _STR_ESC, _SS3 = range(9)


@dataclass(frozen=True, slots=True)
class LineCheck:
    """One typed line, as the policy checks it.

    ``screen`` is ``None`` when keys were typed and nothing was printed on the line since the
    first of them (echo off); an Enter pressed on a line with no keystroke before it has
    ``keys == screen == ""``. ``uncertain``: the keystroke replay met keys whose effect it
    cannot know, or the line outgrew ``MAX_LINE``.
    """

    keys: str
    screen: str | None
    uncertain: bool
    echoed: bool

    @property
    def candidates(self) -> tuple[str, ...]:
        """The distinct non-blank texts among ``keys`` and ``screen``: deny if any is denied."""
        out: list[str] = []
        for text in (self.keys, self.screen):
            if text is not None and text.strip() and text not in out:
                out.append(text)
        return tuple(out)

    @property
    def shown(self) -> str:
        """What may be recorded: the screen text, or ``NOT_ECHOED`` (never unechoed keystrokes)."""
        return self.screen if self.screen is not None else NOT_ECHOED


@dataclass(frozen=True, slots=True)
class _Context:
    """What ``settle`` needs to look at the screen line again for a held Enter."""

    prompt: str
    tail_pos: int
    tail: str
    echo_mark: int
    keys: str
    uncertain: bool


@dataclass(frozen=True, slots=True)
class Forward:
    """Bytes to pass on to the server as they are."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Enter:
    """The Enter key's bytes, to forward only once ``line`` is allowed."""

    raw: bytes
    line: LineCheck
    _ctx: _Context | None = field(default=None, repr=False, compare=False)


def _is_word(ch: str) -> bool:
    return ch.isalnum()


class LineTracker:
    """The screen line and the typed line of one PTY session (sans-IO, not thread-safe)."""

    cancel_bytes = CANCEL_BYTES

    def __init__(self) -> None:
        # ---- the screen (output side)
        self._cells: list[str] = []
        self._col = 0
        self._cut = False  # the current screen line outgrew MAX_LINE
        self._saved_col = 0
        self._alt = False
        self._main: tuple[list[str], int] = ([], 0)
        self._writes = 0  # cells printed so far: tells whether anything was echoed
        self._ostate = _GROUND
        self._oseq = bytearray()
        self._odec = codecs.getincrementaldecoder("utf-8")("replace")
        # ---- the typed line (input side)
        self._istate = _GROUND
        self._iseq = bytearray()
        self._iseq_sent = 0  # bytes of _iseq already forwarded (never part of a paste marker)
        self._idec = codecs.getincrementaldecoder("utf-8")("replace")
        self._keys: list[str] = []
        self._cur = 0
        self._uncertain = False
        self._started = False
        self._prompt = ""
        self._tail_pos = 0
        self._tail = ""
        self._echo_mark = 0

    @property
    def full_screen(self) -> bool:
        """Whether the alternate screen is on (vim, less, top): input is not checked then."""
        return self._alt

    # ================================================================ output: the screen line

    def output(self, data: bytes) -> None:
        """Follow the bytes the server sends to the terminal."""
        i, n = 0, len(data)
        while i < n:
            state = self._ostate
            if state == _GROUND:
                m = _OUT_SPECIAL.search(data, i)
                j = m.start() if m else n
                if j > i:
                    # text right before a LF is scrolled away at once: only its width matters
                    self._print(data[i:j], skip=j < n and data[j] == 0x0A)
                    i = j
                    continue
                b = data[i]
                i += 1
                if b == 0x1B:
                    self._ostate = _ESC
                else:
                    self._control(b)
            elif state == _OSC or state == _STR:
                m = (_OSC_END if state == _OSC else _STR_END).search(data, i)
                if m is None:
                    return
                b = data[m.start()]
                i = m.end()
                if b == 0x1B:
                    self._ostate = _OSC_ESC if state == _OSC else _STR_ESC
                else:
                    self._ostate = _GROUND  # BEL ends an OSC; CAN/SUB abort either
            else:
                b = data[i]
                i += 1
                if state == _OSC_ESC or state == _STR_ESC:
                    if b == 0x5C:  # ESC \ : string terminator
                        self._ostate = _GROUND
                    else:
                        # the ESC ended the string and starts a sequence of its own
                        self._ostate = _ESC
                        i -= 1
                elif b < 0x20 or b == 0x7F:
                    self._control_in_sequence(b)
                elif state == _ESC:
                    self._esc(b)
                elif state == _ESC_INTER:
                    if b >= 0x30:
                        self._ostate = _GROUND
                elif state == _CSI:
                    if b >= 0x80:
                        self._ostate = _GROUND
                    elif b >= 0x40:
                        self._ostate = _GROUND
                        if len(self._oseq) <= _MAX_SEQ:
                            self._csi(bytes(self._oseq), b)
                    elif len(self._oseq) <= _MAX_SEQ:
                        self._oseq.append(b)

    def _control_in_sequence(self, b: int) -> None:
        if b == 0x1B:
            self._ostate = _ESC
        elif b == 0x18 or b == 0x1A:
            self._ostate = _GROUND
        elif b != 0x7F:
            # terminals run C0 controls met inside a sequence and carry on with it
            self._control(b)

    def _print(self, raw: bytes, skip: bool = False) -> None:
        text = self._odec.decode(raw)
        if not text.isascii():
            text = text.translate(_C1)
        if not text:
            return
        self._writes += len(text)
        if self._alt:
            return
        col = self._col
        end = min(col + len(text), MAX_LINE)
        if end - col < len(text):
            self._cut = True
            text = text[:end - col]
        if not skip:
            cells = self._cells
            if col > len(cells):
                cells.extend(" " * (col - len(cells)))
            cells[col:end] = text
        self._col = end

    def _control(self, b: int) -> None:
        if b == 0x0D:
            self._col = 0
        elif b in (0x0A, 0x0B, 0x0C):
            self._new_line()
        elif b == 0x08:
            if self._col > 0:
                self._col -= 1
        elif b == 0x09:
            self._col = min((self._col // 8 + 1) * 8, MAX_LINE)

    def _new_line(self) -> None:
        self._cells = []
        self._cut = False

    def _esc(self, b: int) -> None:
        self._ostate = _GROUND
        if b == 0x5B:  # [
            self._ostate = _CSI
            self._oseq.clear()
        elif b == 0x5D:  # ]
            self._ostate = _OSC
        elif b in (0x50, 0x58, 0x5E, 0x5F):  # P X ^ _ : DCS, SOS, PM, APC strings
            self._ostate = _STR
        elif 0x20 <= b <= 0x2F:
            self._ostate = _ESC_INTER  # charset designations and the like
        elif b == 0x37:  # 7
            self._saved_col = self._col
        elif b == 0x38:  # 8
            self._col = self._saved_col
        elif b == 0x44:  # D: index
            self._new_line()
        elif b == 0x45:  # E: next line
            self._new_line()
            self._col = 0
        elif b == 0x4D:  # M: reverse index, to a line we know nothing of
            self._new_line()
        elif b == 0x63:  # c: full reset
            self._new_line()
            self._col = 0
            if self._alt:
                self._alt = False
                self._reset_line()

    def _csi(self, seq: bytes, final: int) -> None:
        private = seq[:1] in (b"<", b"=", b">", b"?")
        body = seq[1:] if private else seq
        if any(c < 0x30 for c in body):
            return  # intermediates: cursor style, soft reset... nothing the line shows
        params: list[int] = []
        for part in body.split(b";"):
            digits = part.split(b":")[0]
            # a count past a line's width means "to the edge": keep the arithmetic small
            params.append(min(int(digits), MAX_LINE) if digits.isdigit() else 0)
        p = params[0]
        n = max(p, 1)
        if private:
            if seq[:1] == b"?" and final in (0x68, 0x6C):  # h l
                if any(q in _ALT_MODES for q in params):
                    self._set_alt(final == 0x68)
            return
        cells = self._cells
        col = self._col
        ch = chr(final)
        if ch in "Ca":
            self._col = min(col + n, MAX_LINE)
        elif ch == "D":
            self._col = max(col - n, 0)
        elif ch in "G`":
            self._col = min(n - 1, MAX_LINE)
        elif ch in "KJ":
            if p == 0:
                del cells[col:]
            elif p == 1:
                cells[:col + 1] = " " * min(col + 1, len(cells))
            else:
                cells.clear()
        elif ch == "P":
            del cells[col:col + n]
        elif ch == "@":
            if col < len(cells):
                cells[col:col] = " " * n
                del cells[MAX_LINE:]
        elif ch == "X":
            end = min(col + n, len(cells))
            if end > col:
                cells[col:end] = " " * (end - col)
        elif ch == "I":
            self._col = min((col // 8 + n) * 8, MAX_LINE)
        elif ch == "Z":
            self._col = max(((col + 7) // 8 - n) * 8, 0)
        elif ch == "s":
            self._saved_col = col
        elif ch == "u":
            self._col = self._saved_col
        elif ch in "ABEFdHfSTLM":
            # the cursor goes to (or the text scrolls in) a line this model has not seen
            self._new_line()
            if ch in "EF":
                self._col = 0
            elif ch in "Hf":
                self._col = min(max(params[1] if len(params) > 1 else 1, 1) - 1, MAX_LINE)

    def _set_alt(self, on: bool) -> None:
        if on == self._alt:
            return
        if on:
            self._main = (self._cells, self._col)
            self._cells, self._col = [], 0
        else:
            self._cells, self._col = self._main
            self._main = ([], 0)
        self._alt = on
        self._reset_line()

    # ================================================================ input: the typed line

    def input(self, data: bytes) -> list[Forward | Enter]:
        """Split the user's bytes at each Enter; ``Forward`` pieces pass, ``Enter`` pieces wait for the check."""
        if self._alt:
            held = bytes(self._iseq[self._iseq_sent:]) if self._istate != _GROUND else b""
            self._istate = _GROUND
            self._iseq.clear()
            self._iseq_sent = 0
            data = held + data
            return [Forward(data)] if data else []
        out: list[Forward | Enter] = []
        fwd = bytearray()
        i, n = 0, len(data)
        while i < n:
            state = self._istate
            if state == _GROUND:
                m = _TYPED_TEXT.match(data, i)
                if m is not None:
                    self._start()
                    self._insert(self._idec.decode(m.group()))
                    fwd += m.group()
                    i = m.end()
                    continue
                b = data[i]
                i += 1
                if b == 0x0D or b == 0x0A:
                    raw = data[i - 1:i]
                    if b == 0x0D and i < n and data[i] == 0x0A:
                        raw = b"\r\n"
                        i += 1
                    if fwd:
                        out.append(Forward(bytes(fwd)))
                        fwd.clear()
                    out.append(self._enter(raw))
                elif b == 0x1B:
                    self._istate = _ESC
                    self._iseq[:] = b"\x1b"
                    self._iseq_sent = 0
                else:
                    fwd.append(b)
                    self._key_control(b)
                continue
            b = data[i]
            if state == _ESC and (b == 0x0D or b == 0x0A):
                # M-Enter: zsh puts a newline into the buffer; check what precedes it as a line
                # (the ESC is still held: it is a paste-marker prefix)
                i += 1
                raw = b"\x1b" + data[i - 1:i]
                if b == 0x0D and i < n and data[i] == 0x0A:
                    raw += b"\n"
                    i += 1
                self._istate = _GROUND
                self._iseq.clear()
                self._iseq_sent = 0
                self._start()
                self._uncertain = True
                if fwd:
                    out.append(Forward(bytes(fwd)))
                    fwd.clear()
                out.append(self._enter(raw))
                continue
            if (len(self._iseq) >= _MAX_SEQ or (b == 0x1B if state == _ESC else b < 0x20 or b >= 0x7F)):
                # not a key sequence after all: pass it on and read the byte afresh
                self._end_sequence(fwd, interrupted=True)
                self._start()
                self._uncertain = True
                continue
            i += 1
            self._iseq.append(b)
            if state == _ESC:
                if b == 0x5B:
                    self._istate = _CSI
                elif b == 0x4F:
                    self._istate = _SS3
                else:
                    self._end_sequence(fwd)
                    self._meta(b)
            elif state == _SS3:
                self._end_sequence(fwd)
                self._ss3(b)
            elif b >= 0x40:  # CSI final byte
                seq = bytes(self._iseq)
                self._end_sequence(fwd)
                self._csi_key(seq[2:-1], b)
        if self._istate != _GROUND:
            seq = bytes(self._iseq)
            if seq not in _MARKER_PREFIXES:
                fwd += seq[self._iseq_sent:]
                self._iseq_sent = len(seq)
        if fwd:
            out.append(Forward(bytes(fwd)))
        return out

    def settle(self, enter: Enter) -> Enter:
        """``enter`` with its screen view taken again from the screen as it is now.

        For a held Enter typed ahead of its echo: call it once the echo has come in (output
        quiet for a moment), while that Enter is still held and nothing typed after it has
        been forwarded, so the screen still shows its line.
        """
        ctx = enter._ctx
        if ctx is None or self._alt:
            return enter
        return Enter(enter.raw, self._check(ctx), ctx)

    def _end_sequence(self, fwd: bytearray, interrupted: bool = False) -> None:
        seq = bytes(self._iseq)
        # An interrupted marker prefix is dropped too: forwarded, it could join with what
        # follows a stripped marker into a marker the program would see.
        if seq not in (_PASTE_START, _PASTE_END) and not (interrupted and seq in _MARKER_PREFIXES):
            fwd += seq[self._iseq_sent:]
        self._istate = _GROUND
        self._iseq.clear()
        self._iseq_sent = 0

    def _start(self) -> None:
        """A keystroke: the first of a line fixes the prompt (what lies left of the cursor)."""
        if self._started:
            return
        self._started = True
        cells, col = self._cells, self._col
        prompt = "".join(cells[:col])
        self._prompt = prompt + " " * (col - len(prompt))
        rest = "".join(cells[col:]).rstrip()
        stripped = rest.lstrip()
        self._tail_pos = col + len(rest) - len(stripped)
        self._tail = stripped
        self._echo_mark = self._writes

    def _enter(self, raw: bytes) -> Enter:
        self._idec.reset()
        if not self._started:
            # Enter on an empty line: nothing was typed, so nothing can be hidden
            enter = Enter(raw, LineCheck(keys="", screen="", uncertain=False, echoed=True))
        else:
            ctx = _Context(prompt=self._prompt, tail_pos=self._tail_pos, tail=self._tail,
                           echo_mark=self._echo_mark, keys="".join(self._keys), uncertain=self._uncertain)
            enter = Enter(raw, self._check(ctx), ctx)
        self._reset_line()
        return enter

    def _check(self, ctx: _Context) -> LineCheck:
        echoed = self._writes > ctx.echo_mark
        screen: str | None = None
        if echoed:
            line = "".join(self._cells)
            end = ctx.tail_pos + len(ctx.tail)
            if ctx.tail and line[ctx.tail_pos:end] == ctx.tail and not line[end:].strip():
                line = line[:ctx.tail_pos]  # a right prompt still in place
            m = _SEARCH_PREFIX.match(line)
            if m is None:
                # the prompt is cut by its width: a prompt redrawn with other text (a clock)
                # usually keeps it
                line = line[len(ctx.prompt):]
                m = _SEARCH_PREFIX.match(line)
            if m is not None:
                line = line[m.end():]
            screen = line.rstrip()
        return LineCheck(keys=ctx.keys, screen=screen, uncertain=ctx.uncertain or self._cut, echoed=echoed)

    def _reset_line(self) -> None:
        self._keys = []
        self._cur = 0
        self._uncertain = False
        self._started = False
        self._prompt = ""
        self._tail = ""
        self._tail_pos = 0

    # ---- the keystroke model (readline, emacs mode)

    def _insert(self, text: str) -> None:
        room = MAX_LINE - len(self._keys)
        if len(text) > room:
            text = text[:room]
            self._uncertain = True
        if text:
            self._keys[self._cur:self._cur] = text
            self._cur += len(text)

    def _key_control(self, b: int) -> None:
        if b == 0x03:  # ^C: the line is dropped, a new prompt follows
            self._idec.reset()
            self._reset_line()
            return
        self._start()
        keys, cur = self._keys, self._cur
        if b == 0x01:
            self._cur = 0
        elif b == 0x02:
            self._cur = max(cur - 1, 0)
        elif b == 0x04:
            del keys[cur:cur + 1]
        elif b == 0x05:
            self._cur = len(keys)
        elif b == 0x06:
            self._cur = min(cur + 1, len(keys))
        elif b == 0x08 or b == 0x7F:
            if cur > 0:
                del keys[cur - 1]
                self._cur = cur - 1
        elif b == 0x0B:
            del keys[cur:]
        elif b == 0x14:  # ^T: transpose
            if cur == len(keys):
                cur -= 1
            if cur > 0:
                keys[cur - 1], keys[cur] = keys[cur], keys[cur - 1]
                self._cur = cur + 1
        elif b == 0x15:
            if cur < len(keys):
                self._uncertain = True  # zsh kills the whole line, bash only left of the cursor
            del keys[:cur]
            self._cur = 0
        elif b == 0x17:  # ^W: back to the previous whitespace
            i = cur
            while i > 0 and keys[i - 1].isspace():
                i -= 1
            while i > 0 and not keys[i - 1].isspace():
                i -= 1
            del keys[i:cur]
            self._cur = i
        elif b in (0x07, 0x0C, 0x1A, 0x1C):
            pass  # ^G ^L ^Z ^\ leave the line as it is
        else:
            # TAB, ^R ^S ^P ^N ^O ^Y ^V ^X ^_ ...: completion, search, history, yank, undo
            self._uncertain = True

    def _meta(self, b: int) -> None:
        self._start()
        keys, cur = self._keys, self._cur
        if b == 0x62:  # M-b
            self._cur = self._word_back(cur)
        elif b == 0x66:  # M-f
            self._cur = self._word_forward(cur)
        elif b == 0x64:  # M-d
            del keys[cur:self._word_forward(cur)]
        elif b == 0x7F or b == 0x08:  # M-DEL
            start = self._word_back(cur)
            del keys[start:cur]
            self._cur = start
        else:
            self._uncertain = True

    def _word_back(self, i: int) -> int:
        keys = self._keys
        while i > 0 and not _is_word(keys[i - 1]):
            i -= 1
        while i > 0 and _is_word(keys[i - 1]):
            i -= 1
        return i

    def _word_forward(self, i: int) -> int:
        keys, n = self._keys, len(self._keys)
        while i < n and not _is_word(keys[i]):
            i += 1
        while i < n and _is_word(keys[i]):
            i += 1
        return i

    def _ss3(self, final: int) -> None:
        self._move(chr(final))

    def _csi_key(self, params: bytes, final: int) -> None:
        if params in (b"200", b"201") and final == 0x7E:
            return  # paste markers: the text between them is typing
        if final in (0x49, 0x4F) and not params:
            return  # focus in/out reports
        self._start()
        if final == 0x7E:
            key = {b"1": "H", b"7": "H", b"4": "F", b"8": "F", b"3": "delete"}.get(params)
            if key == "delete":
                del self._keys[self._cur:self._cur + 1]
            elif key is not None:
                self._move(key)
            else:
                self._uncertain = True
        elif params in (b"", b"1") or final in (0x48, 0x46) and params == b"1;1":
            self._move(chr(final))
        else:
            self._uncertain = True  # modified arrows (word moves in many inputrc files), F-keys

    def _move(self, key: str) -> None:
        self._start()
        if key == "C":
            self._cur = min(self._cur + 1, len(self._keys))
        elif key == "D":
            self._cur = max(self._cur - 1, 0)
        elif key == "H":
            self._cur = 0
        elif key == "F":
            self._cur = len(self._keys)
        else:
            self._uncertain = True  # Up/Down: history; anything else: unknown
