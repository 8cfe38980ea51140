"""A plain WSGI server (wsgiref) on the tests' project: a serving process that is not runserver.

``python tests/support/wsgi_server.py PORT``; settings from ``DJANGO_SETTINGS_MODULE``.
"""

import sys
from wsgiref.simple_server import make_server


def main() -> None:
    from django.core.wsgi import get_wsgi_application

    application = get_wsgi_application()
    with make_server("127.0.0.1", int(sys.argv[1]), application) as server:
        print("serving", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
