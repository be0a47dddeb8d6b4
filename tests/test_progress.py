"""Progress bars: sparse, line-per-refresh output when the stream is not a terminal; nothing when off."""
import io
import subprocess
import sys

from openmm_smoothflow.progress import progress_bar


def test_pipe_gets_a_bounded_number_of_lines():
    code = ("from openmm_smoothflow.progress import progress_bar\n"
            "bar = progress_bar(total=200000, desc='work', unit='step')\n"
            "for i in range(200000):\n"
            "    bar.update(1)\n"
            "    if i % 1000 == 0:\n"
            "        bar.set_postfix(loss=i)\n"
            "bar.close()\n"
            "for _ in progress_bar(range(50000), desc='loop'):\n"
            "    pass\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert "\r" not in result.stderr
    assert 2 <= len(lines) <= 6, lines  # start and end of each loop (+ one per minute: none here)
    assert "200000/200000" in result.stderr and "50000/50000" in result.stderr


def test_disabled_writes_nothing_and_stringio_is_not_a_terminal():
    stream = io.StringIO()
    for _ in progress_bar(range(1000), enabled=False, file=stream):
        pass
    assert stream.getvalue() == ""
    for _ in progress_bar(range(1000), desc="x", file=stream):
        pass
    assert len(stream.getvalue().splitlines()) == 2 and "\r" not in stream.getvalue()
