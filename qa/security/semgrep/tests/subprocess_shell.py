"""semgrep --test cases for subprocess-shell-true."""

import os
import subprocess

cmd = "ls"
# ruleid: subprocess-shell-true
subprocess.run(cmd, shell=True, check=False)
# ruleid: subprocess-shell-true
out = subprocess.check_output(cmd, shell=True)
# ruleid: subprocess-shell-true
os.system(cmd)
# ok: subprocess-shell-true
subprocess.run(["ls", "-l"], check=False)
# ok: subprocess-shell-true
subprocess.run(["ls"], shell=False, check=False)
