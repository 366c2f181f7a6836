"""semgrep --test cases for tarfile-extractall-without-filter."""

import tarfile
import zipfile

with tarfile.open("a.tar.gz") as tar:
    # ruleid: tarfile-extractall-without-filter
    tar.extractall("out")
archive = tarfile.open("b.tar")
# ruleid: tarfile-extractall-without-filter
archive.extract("member", "out")
with tarfile.open("c.tar") as ok_tar:
    # ok: tarfile-extractall-without-filter
    ok_tar.extractall("out", filter="data")
with zipfile.ZipFile("d.zip") as zf:
    # ok: tarfile-extractall-without-filter
    zf.extractall("out")
