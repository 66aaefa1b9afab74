"""A PEP 517 build backend of a few lines, so that ``pip install ./clients/python`` needs nothing
but pip and the standard library (no setuptools or wheel to download): it zips ``src/bester`` into
a pure-Python wheel with the metadata of ``pyproject.toml``."""

import base64
import hashlib
import io
import os
import tarfile
import tomllib
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _project():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def _names():
    p = _project()
    return p, p["name"].replace("-", "_"), p["version"]


def _metadata(p):
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {p['name']}",
        f"Version: {p['version']}",
        f"Summary: {p.get('description', '')}",
        f"Requires-Python: {p.get('requires-python', '>=3')}",
    ]
    if "license" in p:
        lines.append(f"License: {p['license'].get('text', '')}")
    lines += [f"Classifier: {c}" for c in p.get("classifiers", [])]
    for extra, reqs in p.get("optional-dependencies", {}).items():
        lines.append(f"Provides-Extra: {extra}")
        lines += [f'Requires-Dist: {r}; extra == "{extra}"' for r in reqs]
    lines.append("Description-Content-Type: text/markdown")
    with open(os.path.join(ROOT, p.get("readme", "README.md")), encoding="utf-8") as f:
        return "\n".join(lines) + "\n\n" + f.read()


def _files():
    base = os.path.join(ROOT, "src")
    for dirpath, dirnames, filenames in os.walk(os.path.join(base, "bester")):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith((".py", ".typed")):
                full = os.path.join(dirpath, name)
                yield os.path.relpath(full, base), full


def _digest(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _dist_info(p):
    return {
        "METADATA": _metadata(p).encode(),
        "WHEEL": b"Wheel-Version: 1.0\nGenerator: bester_build\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        "top_level.txt": b"bester\n",
    }


def get_requires_for_build_wheel(config_settings=None):
    return []


get_requires_for_build_sdist = get_requires_for_build_wheel
get_requires_for_build_editable = get_requires_for_build_wheel


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    p, name, version = _names()
    info = f"{name}-{version}.dist-info"
    os.makedirs(os.path.join(metadata_directory, info), exist_ok=True)
    for fname, data in _dist_info(p).items():
        with open(os.path.join(metadata_directory, info, fname), "wb") as f:
            f.write(data)
    return info


def _wheel(directory, entries):
    p, name, version = _names()
    info = f"{name}-{version}.dist-info"
    filename = f"{name}-{version}-py3-none-any.whl"
    record = []
    with zipfile.ZipFile(os.path.join(directory, filename), "w", zipfile.ZIP_DEFLATED) as whl:
        for arcname, data in entries + [(f"{info}/{k}", v) for k, v in _dist_info(p).items()]:
            whl.writestr(arcname, data)
            record.append(f"{arcname},{_digest(data)},{len(data)}")
        record.append(f"{info}/RECORD,,")
        whl.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return filename


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    entries = []
    for arcname, full in _files():
        with open(full, "rb") as f:
            entries.append((arcname, f.read()))
    return _wheel(wheel_directory, entries)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    _, name, _ = _names()
    return _wheel(wheel_directory, [(f"__editable__.{name}.pth", (os.path.join(ROOT, "src") + "\n").encode())])


def build_sdist(sdist_directory, config_settings=None):
    _, name, version = _names()
    filename = f"{name}-{version}.tar.gz"
    top = f"{name}-{version}"
    with tarfile.open(os.path.join(sdist_directory, filename), "w:gz") as tar:
        for rel in ["pyproject.toml", "README.md", "_build/bester_build.py"]:
            tar.add(os.path.join(ROOT, rel), f"{top}/{rel}")
        for arcname, full in _files():
            tar.add(full, f"{top}/src/{arcname}")
        pkg = _metadata(_project()).encode()
        ti = tarfile.TarInfo(f"{top}/PKG-INFO")
        ti.size = len(pkg)
        tar.addfile(ti, io.BytesIO(pkg))
    return filename
