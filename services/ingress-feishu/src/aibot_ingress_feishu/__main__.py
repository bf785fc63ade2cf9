from aibot_common.service import run_service
from aibot_ingress_feishu.app import DEFAULT_PORT, create_app


def main() -> None:
    run_service("ingress-feishu", create_app, DEFAULT_PORT)


if __name__ == "__main__":
    main()
