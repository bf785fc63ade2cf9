"""aibot_core_llm"""
