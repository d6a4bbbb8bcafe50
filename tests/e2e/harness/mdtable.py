"""Reading the Markdown tables the benchmark and soak scripts write."""
from __future__ import annotations


def table(md: str, first_header: str) -> list[dict[str, str]]:
    """Rows of the first Markdown table whose header row starts with `| first_header |`."""
    lines = md.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f"| {first_header} |"):
            header = [c.strip() for c in line.strip().strip("|").split("|")]
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                cells = [c.strip().replace("**", "") for c in row.strip().strip("|").split("|")]
                rows.append(dict(zip(header, cells)))
            return rows
    return []
