from aibot_common.service import run_service
from aibot_ingress_telegram.app import create_app


def main() -> None:
    run_service("ingress-telegram", create_app)


if __name__ == "__main__":
    main()
