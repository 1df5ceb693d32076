"""Puts the measured tables into README.md between their markers.

Usage: python scripts/splice_results.py assets/results README.md

<!-- results:compare:begin --> … <!-- results:compare:end -->  gets RESULTS/compare.md
<!-- results:claims:begin --> … <!-- results:claims:end -->    gets RESULTS/claims.md
<!-- results:routers:begin --> … <!-- results:routers:end -->  gets RESULTS/routers.md
<!-- results:scale:begin --> … <!-- results:scale:end -->      gets RESULTS/scale.md (when it exists)
"""

import os
import re
import sys

root, readme = sys.argv[1], sys.argv[2]
text = open(readme).read()
names = ["compare", "claims", "routers"] + (["scale"] if os.path.exists(os.path.join(root, "scale.md")) else [])
for name in names:
    body = open(os.path.join(root, f"{name}.md")).read().strip()
    pattern = re.compile(rf"(<!-- results:{name}:begin -->\n).*?(<!-- results:{name}:end -->)", re.S)
    if not pattern.search(text):
        sys.exit(f"{readme}: no <!-- results:{name}:begin/end --> markers — add them where the table goes")
    text = pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)
open(readme, "w").write(text)
print(f"spliced {', '.join(n + '.md' for n in names)} into {readme}")
