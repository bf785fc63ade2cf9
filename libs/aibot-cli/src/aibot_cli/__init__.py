"""aibot_cli"""
