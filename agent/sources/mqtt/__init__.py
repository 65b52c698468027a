"""sources/mqtt"""
