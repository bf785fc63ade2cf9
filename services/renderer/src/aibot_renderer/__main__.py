from aibot_common.service import run_service
from aibot_renderer.app import DEFAULT_PORT, create_app


def main() -> None:
    run_service("renderer", create_app, DEFAULT_PORT)


if __name__ == "__main__":
    main()
