"""proc_status_kib: the /proc/self/status reader the benchmarks share."""
import sys

import pytest

from tagnn_pyg.utils import proc_status_kib


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='/proc is Linux-only')
def test_reads_rss_and_peak_in_kib():
    rss, peak = proc_status_kib('VmRSS'), proc_status_kib('VmHWM')
    assert isinstance(rss, int) and rss > 0 and peak >= rss
    assert proc_status_kib('NoSuchField') is None
