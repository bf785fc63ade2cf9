from aibot_common.service import run_service
from aibot_core_llm.app import create_app


def main() -> None:
    run_service("core-llm", create_app)


if __name__ == "__main__":
    main()
