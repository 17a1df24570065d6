"""What benchmarks/serve_load.py and benchmarks/mips.py share: writing a result as
``<stem>.json`` and a markdown table ``<stem>.md`` with the command line."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence


def write_report(out: str, stem: str, result: Dict[str, Any], title: str, intro: str,
                 header: Sequence[str], align: str,
                 cells: Callable[[Dict[str, Any]], Sequence[Any]]) -> str:
    """Write ``out/stem.json`` (``result``, which holds ``command`` and ``rows``) and
    ``out/stem.md`` (a table with one line of ``cells(row)`` per row); returns the
    markdown. ``align`` is the table's separator line (``'|---|---:|'``)."""
    os.makedirs(out, exist_ok=True)
    Path(out, f'{stem}.json').write_text(json.dumps(result, indent=1) + '\n')
    lines: List[str] = [f'# {title}', '', f"Command: `{result['command']}`", '', intro, '',
                        '| ' + ' | '.join(header) + ' |', align]
    lines += ['| ' + ' | '.join(str(c) for c in cells(r)) + ' |' for r in result['rows']]
    text = '\n'.join(lines) + '\n'
    Path(out, f'{stem}.md').write_text(text)
    return text
