"""The filters that turn numbers into text."""
import pytest

from generator.site import formatting as f


def test_bytes_uses_iec_units() -> None:
    assert f.bytes_(0) == "0 B"
    assert f.bytes_(1023) == "1023 B"
    assert f.bytes_(1024) == "1.00 KiB"
    assert f.bytes_(3 * 2**20) == "3.00 MiB"
    assert f.bytes_(1.5 * 2**30) == "1.50 GiB"
    assert f.bytes_(80 * 10**9) == "74.5 GiB"


def test_numbers() -> None:
    assert f.num(1234.5678) == "1,235"
    assert f.num(0.012345) == "0.0123"
    assert f.num(12345678) == "1.23e+07"
    assert f.num(2.0) == "2.00"
    assert f.grouped(1234567) == "1,234,567"
    assert f.ratio(1.0) == "1.00×"
    assert f.pct(0.1234) == "12.3 %"
    assert f.ms(12.345) == "12.3 ms"
    assert f.sci(0.000012345) == "1.2e-05"
    assert f.signed(0.5) == "+0.500" and f.signed(-0.5) == "-0.500"


def test_non_numbers_are_refused_with_the_filter_named() -> None:
    with pytest.raises(TypeError, match="the bytes filter needs a number"):
        f.bytes_("12")
    with pytest.raises(TypeError, match="the num filter"):
        f.num(None)


def test_yesno_refuses_what_is_not_a_boolean() -> None:
    from generator.site.formatting import yesno

    assert yesno(True) == "yes" and yesno(False) == "no"
    with pytest.raises(TypeError, match="yesno filter needs true or false"):
        yesno("False")
