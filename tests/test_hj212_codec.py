"""HJ 212 codec: the standard's worked example, round trips, splitting, and garbage."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telemetry.cli import main
from telemetry.hj212.codec import (
    FrameError,
    FrameReader,
    Packet,
    crc16,
    crc16_modbus,
    decode_frame,
    encode,
    flag_value,
    reassemble,
    split,
)

EXAMPLE_SEGMENT = (
    "QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&"
)
EXAMPLE = f"##0101{EXAMPLE_SEGMENT}1C80\r\n".encode()
MN = "010000A8900016F000169DC0"


def test_worked_example_from_the_standard() -> None:
    assert f"{crc16(EXAMPLE_SEGMENT.encode()):04X}" == "1C80"
    packet = decode_frame(EXAMPLE)
    assert (packet.qn, packet.st, packet.cn, packet.pw, packet.mn, packet.flag) == (
        "20160801085857223",
        "32",
        "1062",
        "100000",
        MN,
        5,
    )
    assert packet.cp == [{"RtdInterval": "30"}]
    assert (packet.version, packet.wants_ack) == ("2017", True)
    assert encode(packet) == EXAMPLE


def test_flag_bits_for_2017_and_2025() -> None:
    assert (flag_value("2017", False), flag_value("2017", True)) == (4, 5)
    assert (flag_value("2025", False), flag_value("2025", True)) == (8, 9)
    assert flag_value("2017", True, split=True) == 7


@pytest.mark.parametrize(
    ("cn", "cp"),
    [
        (
            "2011",
            [
                {"DataTime": "20261126160000"},
                {"w01018-Rtd": "41.5", "w01018-Flag": "N"},
                {"w21003-Rtd": "8.9", "w21003-Flag": "N"},
            ],
        ),
        (
            "2051",
            [
                {"DataTime": "20261126161000"},
                {
                    "w01018-Min": "40.1",
                    "w01018-Avg": "41.5",
                    "w01018-Max": "43.0",
                    "w01018-Cou": "0.12",
                    "w01018-Flag": "N",
                },
            ],
        ),
        ("2061", [{"DataTime": "20261126160000"}, {"w00000-Avg": "2.08", "w00000-Cou": "2.08", "w00000-Flag": "N"}]),
        ("2031", [{"DataTime": "20261126000000"}, {"w21011-Avg": "0.91", "w21011-Flag": "D"}]),
        ("9014", []),
        ("9011", [{"QnRtn": "1"}]),
        ("2061", [{"BeginTime": "20261126000000", "EndTime": "20261126120000"}]),
    ],
)
def test_every_packet_kind_round_trips(cn: str, cp: list[dict[str, str]]) -> None:
    packet = Packet("20261126161001000", "32" if cn != "9014" else "91", cn, "123456", MN, 9, None, None, cp)
    assert decode_frame(encode(packet)) == packet


def test_split_above_the_cp_limit_and_reassemble() -> None:
    items = [{"DataTime": "20261126160000"}] + [{f"a{i:02d}-Avg": f"{i}.5", f"a{i:02d}-Flag": "N"} for i in range(80)]
    packet = Packet("20261126161001000", "32", "2061", "123456", MN, 5, None, None, items)
    parts = split(packet)
    assert len(parts) > 1
    assert all(len(encode(p)) - 12 <= 1024 for p in parts)
    assert [(p.pnum, p.pno, p.flag) for p in parts] == [(len(parts), i + 1, 7) for i in range(len(parts))]
    assert all(p.cp[0] == {"DataTime": "20261126160000"} for p in parts)
    decoded = [decode_frame(encode(p)) for p in reversed(parts)]
    assert reassemble(decoded) == packet
    with pytest.raises(FrameError, match="have parts"):
        reassemble(decoded[1:])


def test_tolerant_where_the_field_is_sloppy() -> None:
    lower = EXAMPLE.replace(b"1C80", b"1c80")
    assert decode_frame(lower).cn == "1062"
    segment = EXAMPLE_SEGMENT.replace("=30&&", "=30;&&")
    sloppy = f"##{len(segment):04d}{segment}{crc16(segment.encode()):04X}".encode()
    assert decode_frame(sloppy).cp == [{"RtdInterval": "30"}]
    modbus = f"##0101{EXAMPLE_SEGMENT}{crc16_modbus(EXAMPLE_SEGMENT.encode()):04X}\r\n".encode()
    with pytest.raises(FrameError) as info:
        decode_frame(modbus)
    assert info.value.reason == "bad_crc"
    assert decode_frame(modbus, accept_modbus_crc=True).cn == "1062"


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"", "no_header"),
        (b"#0101QN", "no_header"),
        (b"##01x1QN", "bad_length"),
        (EXAMPLE[:60], "truncated"),
        (EXAMPLE.replace(b"1C80", b"1C81"), "bad_crc"),
        (EXAMPLE.replace(b"1C80", b"ZZZZ"), "bad_crc"),
        (EXAMPLE.replace(b"##0101", b"##0100"), "bad_length"),
        (b"##9999" + b"A" * 20, "truncated"),
        (b"##0008CP=&&x&&" + f"{crc16(b'CP=&&x&&'):04X}".encode(), "missing_field"),
    ],
)
def test_garbled_frames_say_what_is_wrong(frame: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as info:
        decode_frame(frame)
    assert info.value.reason == reason
    assert str(info.value)


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_random_bytes_never_crash_the_decoder_or_the_stream_reader(data: bytes) -> None:
    for candidate in (data, b"##" + data, b"##0101" + data, EXAMPLE[:40] + data):
        with contextlib.suppress(FrameError):
            decode_frame(candidate)
    reader = FrameReader()
    frames = reader.feed(data + EXAMPLE + data[:5])
    # Whatever came before, a whole frame behind it is found (unless the garbage opened
    # a frame whose announced length swallows it: then it is skipped, never a crash).
    assert EXAMPLE in frames or b"##" in data


def test_stream_reader_finds_frames_split_across_reads_and_skips_garbage() -> None:
    reader = FrameReader()
    stream = b"garbage" + EXAMPLE + b"\x00\x01" + EXAMPLE
    frames: list[bytes] = []
    for i in range(0, len(stream), 7):
        frames += reader.feed(stream[i : i + 7])
    assert frames == [EXAMPLE, EXAMPLE]
    assert reader.skipped == 9


def test_cli_tools(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hj212", "crc", EXAMPLE_SEGMENT]) == 0
    assert capsys.readouterr().out.strip() == "1C80"
    assert main(["hj212", "decode", EXAMPLE.decode().strip()]) == 0
    assert '"RtdInterval": "30"' in capsys.readouterr().out
    assert (
        main(
            [
                "hj212",
                "encode",
                "--cn",
                "2011",
                "--mn",
                MN,
                "--ack",
                "--qn",
                "20261126160000000",
                "--cp",
                "DataTime=20261126160000;w01018-Rtd=41.5,w01018-Flag=N",
            ]
        )
        == 0
    )
    frame = capsys.readouterr().out.strip()
    assert decode_frame(frame.encode()).get("w01018-Rtd") == "41.5"
    assert main(["hj212", "decode", "##0101QN=2016"]) == 1
    assert "invalid (truncated)" in capsys.readouterr().err


# -- lenient receive: what field devices send ------------------------------------------------------

SEG_2005 = "ST=101;CN=2011;PW=123456;MN=41050022000017;CP=&&DataTime=20240101110000;011-Rtd=41.5,011-Flag=N&&"
SEG_2017 = f"QN=20240101110000001;ST=32;CN=2011;PW=123456;MN={MN};Flag=5;CP=&&DataTime=20240101110000;w01018-Rtd=41.5&&"


def framed(segment: bytes, crc: int, lower: bool = False) -> bytes:
    digits = f"{crc:04x}" if lower else f"{crc:04X}"
    return b"##%04d" % len(segment) + segment + digits.encode() + b"\r\n"


def swapped(crc: int) -> int:
    return (crc & 0xFF) << 8 | crc >> 8


@pytest.mark.parametrize(
    ("frame", "strict_reason", "deviations"),
    [
        (framed(SEG_2017.encode(), crc16_modbus(SEG_2017.encode())), "bad_crc", ("crc_modbus",)),
        (framed(SEG_2017.encode(), swapped(crc16_modbus(SEG_2017.encode()))), "bad_crc", ("crc_modbus_swapped",)),
        (
            framed(SEG_2017.encode(), swapped(crc16_modbus(SEG_2017.encode())), lower=True),
            "bad_crc",
            ("crc_lowercase", "crc_modbus_swapped"),
        ),
        (framed(SEG_2005.encode(), crc16(SEG_2005.encode())), "missing_field", ("no_qn", "no_flag", "st_3digit")),
        (
            framed(SEG_2017.replace("w01018-Rtd=41.5", "i12001-Info=设备正常").encode("gbk"), 0),
            "bad_encoding",
            ("gbk",),
        ),
    ],
)
def test_lenient_decoding_accepts_field_variants_and_names_each(
    frame: bytes, strict_reason: str, deviations: tuple[str, ...]
) -> None:
    if deviations == ("gbk",):  # the CRC over the GBK bytes
        segment = frame[6:-6]
        frame = framed(segment, crc16(segment))
    with pytest.raises(FrameError) as info:
        decode_frame(frame)
    assert info.value.reason == strict_reason
    packet = decode_frame(frame, lenient=True)
    assert packet.deviations == deviations
    assert packet.cn == "2011"
    if "no_qn" in deviations:
        assert (packet.qn, packet.flag, packet.wants_ack, packet.st) == ("", 0, False, "101")
        assert packet.get("011-Rtd") == "41.5"
    if deviations == ("gbk",):
        assert packet.get("i12001-Info") == "设备正常"


def test_a_lower_case_crc_is_accepted_strictly_and_named() -> None:
    assert decode_frame(EXAMPLE.replace(b"1C80", b"1c80")).deviations == ("crc_lowercase",)
    assert decode_frame(EXAMPLE).deviations == ()


def test_a_wrong_crc_is_refused_even_when_lenient() -> None:
    with pytest.raises(FrameError, match="does not match"):
        decode_frame(EXAMPLE.replace(b"1C80", b"1C81"), lenient=True)


def test_the_stream_reader_skips_a_frame_longer_than_its_limit() -> None:
    reader = FrameReader(max_length=200)
    frames = reader.feed(b"##9000" + b"x" * 50 + EXAMPLE)
    assert frames == [EXAMPLE]
    assert reader.oversized == 1
    assert reader.pending == 0


def test_cli_decode_lenient_names_the_deviations(capsys: pytest.CaptureFixture[str]) -> None:
    frame = framed(SEG_2005.encode(), swapped(crc16_modbus(SEG_2005.encode()))).decode().strip()
    assert main(["hj212", "decode", frame]) == 1
    assert "invalid (bad_crc)" in capsys.readouterr().err
    assert main(["hj212", "decode", frame, "--lenient"]) == 0
    out = capsys.readouterr().out
    assert '"deviations": [\n    "crc_modbus_swapped",\n    "no_qn",\n    "no_flag",\n    "st_3digit"\n  ]' in out


def _bitwise(data: bytes, modbus: bool) -> int:
    """DESIGN.md's CRC written out bit by bit (and CRC-16/MODBUS, its per-byte XOR in the low byte)."""
    crc = 0xFFFF
    for byte in data:
        crc = crc ^ byte if modbus else (crc >> 8) ^ byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


@given(st.binary(max_size=1100))
def test_table_crcs_match_the_bitwise_definition(data: bytes) -> None:
    assert crc16(data) == _bitwise(data, modbus=False)
    assert crc16_modbus(data) == _bitwise(data, modbus=True)
