"""Start rob-flask 0.6.0 on flowserv-core 0.9.4 (run with ``.venv-robflask/bin/python``).

Usage:
  robflask_launcher.py init BASEDIR TEMPLATE   create the database, install the template
  robflask_launcher.py serve BASEDIR PORT      Flask's threaded server (one process)
  gunicorn 'robflask_launcher:wsgi_app()'      with BENCH_BASEDIR set (several processes)

rob-flask 0.6.0 imports ``flowserv.model.files.base.FlaskFile``, which flowserv-core
removed in 0.9.0: a stand-in like 0.8.1's is registered before robflask is imported
(REST.md, "Running the original server").
"""

import io
import json
import os
import sys
import types


def configure(basedir):
    """Point flowserv and robflask at ``basedir`` (database, file store, logs)."""
    os.makedirs(basedir, exist_ok=True)
    store = os.path.join(basedir, "filestore.json")
    with open(store, "w") as f:
        json.dump({"type": "fs", "args": [{"key": "basedir", "value": basedir}]}, f)
    os.environ.update(
        {
            "FLOWSERV_API_DIR": basedir,
            "FLOWSERV_DATABASE": f"sqlite:///{basedir}/flowserv.db",
            "FLOWSERV_FILESTORE": store,
            "ROB_WEBAPI_LOG": os.path.join(basedir, "log"),
        }
    )
    from flowserv.volume.base import IOHandle

    class FlaskFile(IOHandle):
        """flowserv 0.8.1's handle of an uploaded werkzeug file."""

        def __init__(self, file):
            self.file = file

        def open(self):
            buf = io.BytesIO()
            self.file.save(buf)
            buf.seek(0)
            return buf

        def size(self):
            return self.file.content_length

    import flowserv.model.files as files

    base = types.ModuleType("flowserv.model.files.base")
    base.FlaskFile = FlaskFile
    files.base = base
    sys.modules["flowserv.model.files.base"] = base


def init(basedir, template):
    configure(basedir)
    from flowserv.client.api import ClientAPI
    from flowserv.config import env
    from flowserv.model.database import DB

    DB(connect_url=os.environ["FLOWSERV_DATABASE"]).init()
    factory = ClientAPI(env=env().auth())
    with factory() as api:
        wf = api.workflows().create_workflow(
            source=template, name="bench", specfile="benchmark.yaml"
        )
    print(wf["id"])


def wsgi_app():
    configure(os.environ["BENCH_BASEDIR"])
    from robflask.api import create_app

    return create_app()


if __name__ == "__main__":
    command, basedir, arg = sys.argv[1:4]
    if command == "init":
        init(basedir, arg)
    else:
        os.environ["BENCH_BASEDIR"] = basedir
        os.environ["FLOWSERV_API_PORT"] = arg
        wsgi_app().run(host="127.0.0.1", port=int(arg), threaded=True)
