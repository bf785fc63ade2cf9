from aibot_common.service import run_service
from aibot_renderer.app import create_app


def main() -> None:
    run_service("renderer", create_app)


if __name__ == "__main__":
    main()
