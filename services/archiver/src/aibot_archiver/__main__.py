from aibot_archiver.app import create_app
from aibot_common.service import run_service


def main() -> None:
    run_service("archiver", create_app)


if __name__ == "__main__":
    main()
