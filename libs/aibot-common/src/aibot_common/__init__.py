"""aibot_common"""
