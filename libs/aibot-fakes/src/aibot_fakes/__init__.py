"""aibot_fakes"""
