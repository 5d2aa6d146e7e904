"""Recall: embed feedback text, index it in Milvus, answer semantic queries, find top issues."""
