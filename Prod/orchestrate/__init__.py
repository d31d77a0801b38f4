"""Run the whole platform on one machine; ``bash start_services.sh`` is its front door.

- :mod:`.environment` (standard library only): reads ``.env`` + environment, picks the mode;
- :mod:`.local`: local mode - real Postgres/Redis/Chroma from PyPI wheels, ingest when empty, the
  three services as background processes with pid files and logs under ``settings.data_dir``;
- :mod:`.docker` (standard library only): Docker mode through ``docker compose``.
- :mod:`.local_infra`: the local Postgres, Redis and Chroma servers (also used by ``reco infra``,
  the benchmarks and the tests).

``python -m Prod.orchestrate --help`` lists the commands. Docker mode and ``mode`` need no
third-party package, so the shell script can call them before any virtual environment exists.
"""
