# Start one Dask process exactly as dask-cloud specified it.
#
#   python launch.py /etc/dask/launch.json
#
# launch.json is {"args": [...], "env": {...}}: the arguments after `dask` and the environment the
# process needs (TLS settings, user variables). Values travel as JSON data and reach the process
# through execve, never through a shell, so quotes, newlines, `$` and backticks are safe.
# (Full-line comments and blank lines are stripped from the copy shipped in user-data; strings
# use single quotes, which the JSON string it travels in need not escape.)
import json, os, shutil, sys

# The official Dask images install EXTRA_{APT,CONDA,PIP}_PACKAGES in this script. Their entrypoint
# already ran it, but without our environment: run it again with it when those are set.
PREPARE = '/usr/bin/prepare.sh'

with open(sys.argv[1], encoding='utf-8') as f:
    spec = json.load(f)
env = {**os.environ, **spec['env']}
# `dask` on PATH first, else the one installed beside this interpreter (venv, conda).
dask = shutil.which('dask', path=env.get('PATH', os.defpath)) or shutil.which(
    'dask', path=os.path.dirname(sys.executable))
if not dask:
    sys.exit('launch.py: no dask on PATH or beside ' + sys.executable)
argv = [dask] + spec['args']
if os.path.exists(PREPARE) and any(env.get(f'EXTRA_{k}_PACKAGES') for k in ('APT', 'CONDA', 'PIP')):
    argv = [PREPARE] + argv
os.execve(argv[0], argv, env)
