"""The PTY line tracker: typed lines rebuilt from keystrokes and from the screen, against byte
streams shaped like what bash/readline and zsh send (prompt with title OSC and colours, echo,
redraws after backspace, history recall, reverse search, completion)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.ssh.terminal import (CANCEL_BYTES, MAX_LINE, NOT_ECHOED, Enter, Forward, LineCheck,
                                    LineTracker)

# Debian's default bash prompt: title, then a coloured user@host:dir$
BASH_PROMPT = b"\x1b[?2004h\x1b]0;alice@db1: ~\x07\x1b[01;32malice@db1\x1b[00m:\x1b[01;34m~\x1b[00m$ "
PROMPT_TEXT = "alice@db1:~$ "


def tracker(prompt: bytes = BASH_PROMPT) -> LineTracker:
    t = LineTracker()
    t.output(b"Welcome to db1\r\n" + prompt)
    return t


def type_echo(t: LineTracker, keys: bytes, echo: bytes | None = None) -> list[Forward | Enter]:
    """Keystrokes, then the server's echo of them (the keys themselves when ``echo`` is None)."""
    pieces = t.input(keys)
    t.output(keys if echo is None else echo)
    return pieces


def press_enter(t: LineTracker, raw: bytes = b"\r") -> LineCheck:
    pieces = t.input(raw)
    assert len(pieces) == 1 and isinstance(pieces[0], Enter)
    assert pieces[0].raw == raw
    return pieces[0].line


def enters(pieces: list[Forward | Enter]) -> list[Enter]:
    return [p for p in pieces if isinstance(p, Enter)]


def forwarded(pieces: list[Forward | Enter]) -> bytes:
    return b"".join(p.data if isinstance(p, Forward) else p.raw for p in pieces)


# ------------------------------------------------------------------ typing and echo


def test_typed_and_echoed_line():
    t = tracker()
    for ch in b"ls -la /etc":
        assert t.input(bytes([ch])) == [Forward(bytes([ch]))]
        t.output(bytes([ch]))
    line = press_enter(t)
    assert line == LineCheck(keys="ls -la /etc", screen="ls -la /etc", uncertain=False, echoed=True)
    assert line.candidates == ("ls -la /etc",)
    assert line.shown == "ls -la /etc"


def test_enter_resets_the_line_and_the_next_prompt_is_taken_afresh():
    t = tracker()
    type_echo(t, b"whoami")
    press_enter(t)
    t.output(b"\x1b[?2004l\r\r\nalice\r\n" + BASH_PROMPT.replace(b"~", b"/srv"))
    type_echo(t, b"pwd")
    line = press_enter(t)
    assert (line.keys, line.screen) == ("pwd", "pwd")


@pytest.mark.parametrize("raw", [b"\r", b"\n", b"\r\n"])
def test_enter_forms_are_one_enter(raw):
    t = tracker()
    pieces = t.input(b"id" + raw + b"w")
    assert [type(p) for p in pieces] == [Forward, Enter, Forward]
    assert pieces[1].raw == raw and pieces[1].line.keys == "id"
    assert pieces[2] == Forward(b"w")


def test_crlf_split_across_reads_is_a_second_empty_enter():
    t = tracker()
    assert enters(t.input(b"id\r"))[0].raw == b"\r"
    (enter,) = enters(t.input(b"\n"))
    assert enter.line.keys == "" and enter.line.candidates == ()


def test_empty_enter_has_nothing_to_hide():
    t = tracker()
    line = press_enter(t)
    assert line.candidates == () and line.shown == ""


def test_utf8_split_across_reads():
    t = tracker()
    data = "echo héllo ✓".encode()
    for i in range(len(data)):
        t.input(data[i:i + 1])
        t.output(data[i:i + 1])
    line = press_enter(t)
    assert line.keys == line.screen == "echo héllo ✓"


# ------------------------------------------------------------------ line editing, both views


@pytest.mark.parametrize("erase", [b"\b \b", b"\b\x1b[K"])
def test_backspace_redraws(erase):
    t = tracker()
    type_echo(t, b"lx")
    type_echo(t, b"\x7f", erase)
    type_echo(t, b"s")
    line = press_enter(t)
    assert (line.keys, line.screen, line.uncertain) == ("ls", "ls", False)


def test_editing_in_the_middle_of_the_line():
    t = tracker()
    type_echo(t, b"cat /etc/passwd")
    # ^A, then M-f twice: after "cat", after "etc"
    type_echo(t, b"\x01", b"\r" + b"\x1b[C" * len(PROMPT_TEXT))
    type_echo(t, b"\x1bf\x1bf", b"\x1b[8C")
    # DEL the "c" of etc: readline moves back one and deletes a character
    type_echo(t, b"\x7f", b"\b\x1b[P")
    # insert "X": readline inserts a blank and writes over it
    type_echo(t, b"X", b"\x1b[@X")
    line = press_enter(t)
    assert line.keys == "cat /etX/passwd"
    assert line.screen == "cat /etX/passwd"


def test_kill_commands():
    t = tracker()
    t.input(b"rm -rf /tmp/old")
    t.input(b"\x17")  # ^W: back to the previous blank
    assert enters(t.input(b"\r"))[0].line.keys == "rm -rf "
    t.input(b"echo one two\x02\x02\x02\x0b")  # ^B x3, ^K
    assert enters(t.input(b"\r"))[0].line.keys == "echo one "
    t.input(b"sudo reboot\x15uptime")  # ^U at the end of the line
    line = enters(t.input(b"\r"))[0].line
    assert (line.keys, line.uncertain) == ("uptime", False)


def test_ctrl_u_in_the_middle_differs_between_shells():
    t = tracker()
    t.input(b"abc def\x1b[D\x1b[D\x15")
    line = enters(t.input(b"\r"))[0].line
    assert line.keys == "ef" and line.uncertain


def test_cursor_keys_csi_and_ss3_forms():
    for home, end, left, right in [(b"\x1b[H", b"\x1b[F", b"\x1b[D", b"\x1b[C"),
                                   (b"\x1bOH", b"\x1bOF", b"\x1bOD", b"\x1bOC"),
                                   (b"\x1b[1~", b"\x1b[4~", b"\x1b[D", b"\x1b[C")]:
        t = tracker()
        t.input(b"bc" + home + b"a" + end + b"d" + left + left + b"\x1b[3~" + right + b"\x04")
        line = enters(t.input(b"\r"))[0].line
        assert (line.keys, line.uncertain) == ("abd", False), home


def test_meta_word_commands_and_transpose():
    t = tracker()
    t.input(b"git push --force origin")
    # back two words (to "force"), then M-DEL: back over " --" and the word before it
    t.input(b"\x1bb\x1bb\x1b\x7f")
    assert enters(t.input(b"\r"))[0].line.keys == "git force origin"
    t.input(b"sl\x14")  # ^T at the end swaps the last two
    assert enters(t.input(b"\r"))[0].line.keys == "ls"
    t.input(b"echo a b\x01\x1bd")  # M-d kills the next word
    assert enters(t.input(b"\r"))[0].line.keys == " a b"


def test_ctrl_c_cancels_the_line():
    t = tracker()
    type_echo(t, b"rm -rf /srv/data")
    assert t.input(b"\x03") == [Forward(b"\x03")]
    t.output(b"^C\r\n" + BASH_PROMPT)
    type_echo(t, b"ls")
    line = press_enter(t)
    assert (line.keys, line.screen, line.uncertain) == ("ls", "ls", False)


@pytest.mark.parametrize("key", [b"\t", b"\x12", b"\x10", b"\x0e", b"\x1b[A", b"\x1b[B", b"\x1bOA", b"\x19",
                                 b"\x1b[1;5C", b"\x1b[15~", b"\x18\x05"])
def test_keys_with_unknown_effect_make_the_line_uncertain(key):
    t = tracker()
    t.input(b"ls" + key)
    assert enters(t.input(b"\r"))[0].line.uncertain


def test_history_recall_with_clear_to_end():
    t = tracker()
    type_echo(t, b"echo hi")
    type_echo(t, b"\x1b[A", b"\r\x1b[K" + PROMPT_TEXT.encode() + b"sudo systemctl stop nginx")
    line = press_enter(t)
    assert line.keys == "echo hi" and line.uncertain
    assert line.screen == "sudo systemctl stop nginx"
    assert set(line.candidates) == {"echo hi", "sudo systemctl stop nginx"}


def test_history_recall_with_cursor_left_redraw():
    t = tracker()
    type_echo(t, b"git status -sb")  # 14 characters
    type_echo(t, b"\x1b[A", b"\x1b[14Drm -rf build\x1b[K")
    line = press_enter(t)
    assert line.screen == "rm -rf build" and line.uncertain


def test_reverse_search_prefix_is_stripped():
    t = tracker()
    type_echo(t, b"\x12", b"\r(reverse-i-search)`': ")
    # each search key rewrites the line from the search string on (column 20, then 21)
    type_echo(t, b"d", b"\x1b[20Gd': docker rm -f web\x1b[K\x1b[16D")
    type_echo(t, b"r", b"\x1b[21Gr': docker rm -f web\x1b[K\x1b[15D")
    line = press_enter(t)
    assert line.screen == "docker rm -f web"
    assert line.uncertain and "docker rm -f web" in line.candidates


def test_failed_search_prefix_is_stripped_too():
    t = tracker()
    type_echo(t, b"\x12zz", b"\r(failed reverse-i-search)`zz': ls\x1b[2D")
    assert press_enter(t).screen == "ls"


def test_tab_completion_is_seen_on_the_screen():
    t = tracker()
    type_echo(t, b"cat /et")
    type_echo(t, b"\t", b"c/")
    type_echo(t, b"shadow")
    line = press_enter(t)
    assert line.keys == "cat /etshadow" and line.uncertain
    assert line.screen == "cat /etc/shadow"
    assert "cat /etc/shadow" in line.candidates


def test_zsh_right_prompt_is_not_part_of_the_command():
    t = LineTracker()
    # zsh: PS1, then RPS1 at the right edge, then back to after PS1
    t.output(b"alice@db1 ~ % " + b" " * 50 + b"\x1b[32m[12:00:01]\x1b[0m\r\x1b[14C")
    type_echo(t, b"uname -a")
    line = press_enter(t)
    assert line.screen == "uname -a"


def test_prompt_redrawn_with_other_text_of_the_same_width():
    t = tracker(b"[12:00] $ ")
    type_echo(t, b"df -h")
    t.output(b"\r\x1b[K[12:01] $ df -h")
    assert press_enter(t).screen == "df -h"


def test_tabs_columns_and_erase_sequences():
    t = tracker(b"$ ")
    type_echo(t, b"printf x", b"printf\tx")  # a tab on the screen lands on column 8
    t.output(b"\x1b[3G\x1b[2XAB\x1b[K")  # column 3, erase two, write two, clear the rest
    assert press_enter(t).screen == "AB"


def test_osc_with_string_terminator_and_dcs_print_nothing():
    t = tracker(b"$ ")
    type_echo(t, b"ls", b"\x1b]2;title\x1b\\l\x1bP+q544e\x1b\\s\x1b(B\x1b[0m")
    assert press_enter(t).screen == "ls"


# (keys typed, bytes bash 5.2 echoed for them) pairs captured through a real PTY, prompt "user@host:~$ "
CAPTURED = [
    ("reverse search that fails on its second key",
     [(b"\x12", b"\r(reverse-i-search)`': "),
      (b"tw", b"\x08\x08\x08t': echo \x1b[7mt\x1b[27mhrXee\x08\x08\x08\x08\x08\x08\x07\r\x1b[Cfailed "
              b"reverse-i-search)`tw': echo thrXee\x08\x08\x08\x08\x08\x08")],
     "tw", "echo thrXee", True),
    ("word moves and an insertion",
     [(b"ls -l\x01\x1bf\x1bf \x05 /tmp", b"ls -l\x08\x08\x08\x08\x08\x1b[C\x1b[C\x1b[C\x1b[C\x1b[C  /tmp")],
     "ls -l  /tmp", "ls -l  /tmp", False),
    ("word rubouts, then delete and insert at the start",
     [(b"echo aaa bbb ccc\x17\x17X\x01\x1b[3~\x1b[3~\x1b[3~\x1b[3~\x1b[3~Y",
       b"echo aaa bbb ccc\x08\x08\x08\x1b[K\x08\x08\x08\x08\x1b[KX\x08\x08\x08\x08\x08\x08\x08\x08\x08\x08"
       b"\x1b[1P\x1b[1P\x1b[1P\x1b[1P\x1b[1P\x1b[1@Y")],
     "Yaaa X", "Yaaa X", False),
    ("history recall, then an insertion",
     [(b"\x1b[A", b"echo three"), (b"\x1b[D\x1b[DX", b"\x08\x08Xee\x08\x08")],
     "X", "echo thrXee", True),
]


@pytest.mark.parametrize("name, steps, keys, screen, uncertain", CAPTURED, ids=[c[0] for c in CAPTURED])
def test_captured_bash_sessions(name, steps, keys, screen, uncertain):
    t = LineTracker()
    t.output(b"\r\n\x1b[?2004l\rone\r\n\x1b[?2004huser@host:~$ ")
    for typed, echo in steps:
        type_echo(t, typed, echo)
    line = press_enter(t)
    assert (line.keys, line.screen, line.uncertain) == (keys, screen, uncertain)


# ------------------------------------------------------------------ paste


def test_bracketed_paste_of_two_lines_is_two_checked_enters_and_markers_are_dropped():
    t = tracker()
    pieces = t.input(b"\x1b[200~echo one\recho two\r\x1b[201~")
    assert [type(p) for p in pieces] == [Forward, Enter, Forward, Enter]
    assert [e.line.keys for e in enters(pieces)] == ["echo one", "echo two"]
    assert b"\x1b" not in forwarded(pieces)
    assert forwarded(pieces) == b"echo one\recho two\r"


def test_paste_marker_split_across_reads_is_still_dropped():
    t = tracker()
    out = []
    for chunk in (b"x\x1b", b"[20", b"0~rm -rf /\x1b[2", b"01~"):
        out += t.input(chunk)
    assert forwarded(out) == b"xrm -rf /"
    assert enters(t.input(b"\r"))[0].line.keys == "xrm -rf /"


def test_lone_escape_waits_for_the_next_key():
    t = tracker()
    t.input(b"one two")
    assert t.input(b"\x1b") == []
    assert t.input(b"b") == [Forward(b"\x1bb")]
    t.input(b"X")
    assert enters(t.input(b"\r"))[0].line.keys == "one Xtwo"


@pytest.mark.parametrize("data", [b"\x1b[20\x1b[200~0~", b"\x1b\x1b[200~[200~", b"\x1b[2\x03\x1b[201~01~"])
def test_stripping_a_marker_never_forms_another(data):
    t = tracker()
    out = forwarded(t.input(data) + t.input(b"x"))
    assert b"\x1b[200~" not in out and b"\x1b[201~" not in out


def test_meta_enter_is_checked_as_an_enter():
    t = tracker()
    (enter,) = enters(t.input(b"rm -rf /srv\x1b\r"))
    assert enter.raw == b"\x1b\r"
    assert enter.line.keys == "rm -rf /srv" and enter.line.uncertain


# ------------------------------------------------------------------ echo off, full screen, cancel


def test_password_typed_with_echo_off_is_never_shown():
    t = tracker()
    type_echo(t, b"sudo -k true")
    press_enter(t)
    t.output(b"\r\n[sudo] password for alice: ")
    t.input(b"hunter2")  # no echo comes back
    line = press_enter(t)
    assert line.screen is None and not line.echoed
    assert line.shown == NOT_ECHOED
    assert line.keys == "hunter2"  # still checked: stty -echo must not switch checks off
    assert line.candidates == ("hunter2",)


def test_full_screen_programs_are_not_checked():
    t = tracker()
    type_echo(t, b"vim notes")
    press_enter(t)
    t.output(b"\r\n\x1b[?1049h\x1b[22;0;0t\x1b[?1h\x1b=\x1b[H\x1b[2J~\r\n~\r\n")
    assert t.full_screen
    keys = b"ihello\r\x1b[200~pasted\r\x1b[201~\x1b:wq\r"
    assert t.input(keys) == [Forward(keys)]
    t.output(b"\x1b[?1049l\x1b[23;0;0t\r\x1b[?1l\x1b>")
    assert not t.full_screen
    t.output(BASH_PROMPT)
    type_echo(t, b"ls")
    assert press_enter(t).screen == "ls"


@pytest.mark.parametrize("mode", [b"?47", b"?1047", b"?1049", b"?1;1049"])
def test_alternate_screen_modes(mode):
    t = tracker()
    t.output(b"\x1b[" + mode + b"h")
    assert t.full_screen
    t.output(b"\x1b[" + mode + b"l")
    assert not t.full_screen


def test_cancel_bytes_empty_the_line_in_the_keystroke_model():
    assert CANCEL_BYTES == LineTracker.cancel_bytes == b"\x05\x15\r"
    # what the shell does with them: ^E ^U leave nothing, whatever the cursor position
    shell = LineTracker()
    shell.input(b"rm -rf /srv\x1b[D\x1b[D\x01\x06")
    (enter,) = enters(shell.input(CANCEL_BYTES))
    assert enter.line.keys == ""


def test_after_a_denied_enter_the_next_line_starts_fresh():
    t = tracker()
    type_echo(t, b"rm -rf /srv")
    (denied,) = enters(t.input(b"\r"))
    assert denied.line.keys == "rm -rf /srv"
    # the glue sends CANCEL_BYTES upstream; the shell answers with a fresh prompt
    t.output(b"\r\n" + BASH_PROMPT)
    type_echo(t, b"ls")
    line = press_enter(t)
    assert (line.keys, line.screen) == ("ls", "ls")


def test_settle_reads_the_echo_that_came_after_enter():
    t = tracker()
    (enter,) = enters(t.input(b"uptime\r"))
    assert enter.line.screen is None and enter.line.shown == NOT_ECHOED
    t.output(b"uptime")
    settled = t.settle(enter)
    assert settled.raw == b"\r"
    assert settled.line.screen == "uptime" and settled.line.echoed


def test_long_line_is_cut_and_uncertain():
    t = tracker()
    t.input(b"a" * (MAX_LINE + 10))
    line = enters(t.input(b"\r"))[0].line
    assert len(line.keys) == MAX_LINE and line.uncertain


def test_huge_counts_in_sequences_stay_bounded():
    t = tracker(b"$ ")
    type_echo(t, b"ls")
    t.output(b"\x1b[99999999999999999999@\x1b[99999999999C\x1b[" + b"1" * 5000 + b"X")
    assert len(t._cells) <= MAX_LINE
    line = press_enter(t)
    assert line.screen.startswith("ls")


# ------------------------------------------------------------------ properties


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in points + [len(data)]:
        out.append(data[prev:p])
        prev = p
    return out


_KEYS = st.lists(st.sampled_from([b"a", b"b", b" ", b"/", b"\r", b"\n", b"\x7f", b"\x01", b"\x05", b"\x0b",
                                  b"\x15", b"\x17", b"\x1b", b"[", b"O", b"2", b"0", b"1", b"~", b"A", b"D",
                                  b"\x1b[200~", b"\x1b[201~", b"\x1b[D", b"\t", b"\xc3", b"\xa9", b"\x03"]),
                 max_size=60).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(_KEYS, st.lists(st.integers(0, 200), max_size=8))
def test_forwarded_bytes_do_not_depend_on_how_input_is_read(data, cuts):
    def run(chunks):
        t = LineTracker()
        pieces = []
        for c in chunks:
            pieces += t.input(c)
        pieces += t.input(b"x")  # ends any sequence still open
        return forwarded(pieces), [e.line.keys for e in enters(pieces) if e.raw != b"\n"]

    whole = run([data])
    assert run(_chunks(data, cuts))[0] == whole[0]
    # whatever the input, the program never gets a paste marker (it would take the lines
    # after it as one buffer, out of reach of the line checks)
    assert b"\x1b[200~" not in whole[0] and b"\x1b[201~" not in whole[0]
    if b"\x1b" not in data:
        assert whole[0] == data + b"x"


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF, blacklist_categories=("Cc",)), max_size=40))
def test_plain_typing_is_the_line_in_both_views(text):
    t = tracker(b"$ ")
    for ch in text:
        type_echo(t, ch.encode())
    line = press_enter(t)
    assert line.keys == text
    assert line.screen == text.rstrip()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=6))
def test_random_bytes_never_raise(out_data, in_data, cuts):
    t = LineTracker()
    for a, b in zip(_chunks(out_data, cuts), _chunks(in_data, cuts)):
        t.output(a)
        for piece in t.input(b):
            if isinstance(piece, Enter):
                piece.line.candidates, piece.line.shown
                t.settle(piece)
