from aibot_common.service import run_service
from aibot_ingress_feishu.app import create_app


def main() -> None:
    run_service("ingress-feishu", create_app)


if __name__ == "__main__":
    main()
