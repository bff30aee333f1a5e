"""Bundle an artifact and deploy it to devices: push, verify, check and profile it there.

Data flow (one module per step)::

    artifact dir ──bundle.py──► bundle dir (models + manifest + target.toml + golden + bundle.json)
    devices.toml ──inventory.py──► Device records
    Device ──ssh.py (a transport.py Transport)──► connection
    session.py: probe (edgeopt-runtime device) → push.py (changed files, verified, swapped in)
                → edgeopt-runtime check → edgeopt-runtime profile
    results ──report.py──► edgeopt.deploy/1 document, merged into OUT/report.json

Nothing here imports TensorFlow; asyncssh is imported when a connection is opened.
"""
