# scripts/lib/python.sh -- sourced by the LocalStack scripts: picks the Python that builds
# their venvs. Both LocalStacks are tested on Python 3.11, 3.12 and 3.13 (CI installs and
# starts them under 3.13 too). Newer Pythons are refused: their pins were never tried there.
#
#   pick_python        prints the path of a suitable interpreter, or explains and returns 1.
#                      $PYTHON, when set, is used as given (and must be suitable).
#                      Otherwise the first of python3.11, python3.12, python3.13, python3 that
#                      runs, is 3.11-3.13 and has venv + ensurepip: the oldest first, because
#                      the pins were made on 3.11 and need no compatibility shims there.
#   python_minor PY    prints "3.13" for a 3.13 interpreter.
# The caller sets TAG (its log prefix).

SUPPORTED_PYTHONS="3.11 3.12 3.13"

# The interpreter's real path when it is a suitable one; nothing (and status 1) otherwise.
suitable_python() {
  "$1" - "$SUPPORTED_PYTHONS" 2>/dev/null <<'PYEOF'
import sys
version = "%d.%d" % sys.version_info[:2]
if version not in sys.argv[1].split():
    sys.exit(1)
import ensurepip, venv  # Debian ships these apart (python3-venv)
print(sys.executable)
PYEOF
}

pick_python() {
  if [[ -n "${PYTHON:-}" ]]; then
    if suitable_python "$PYTHON"; then return 0; fi
    echo "$TAG ERROR: PYTHON=$PYTHON is not Python 3.11, 3.12 or 3.13 with the venv module." >&2
    echo "$TAG fix: point PYTHON at one that is (e.g. PYTHON=python3.12), or unset it to let this script choose." >&2
    return 1
  fi
  local candidate
  for candidate in python3.11 python3.12 python3.13 python3; do
    command -v "$candidate" >/dev/null 2>&1 || continue
    if suitable_python "$candidate"; then return 0; fi
  done
  echo "$TAG ERROR: no Python 3.11, 3.12 or 3.13 with the venv module found (tried python3.11, python3.12, python3.13, python3)." >&2
  echo "$TAG fix: install one (Debian/Ubuntu: apt install python3-venv; macOS: brew install python@3.13)," >&2
  echo "$TAG      or set PYTHON=/path/to/python3.x" >&2
  return 1
}

python_minor() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])'; }
