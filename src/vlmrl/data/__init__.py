"""Where samples come from: procedural tasks with scene facts, and dataset loaders."""

from vlmrl.data.export import export_parquet
from vlmrl.data.grid import save_grid, write_tasks_grid
from vlmrl.data.loading import DatasetError, load_dataset
from vlmrl.data.prompts import build_messages, list_templates, load_template, render_prompt
from vlmrl.data.sample import ANSWER_TYPES, IMAGE_PLACEHOLDER, Sample
from vlmrl.data.tasks import TaskGenerator, generate, get_task, register_task, task_names

__all__ = [
    "ANSWER_TYPES",
    "IMAGE_PLACEHOLDER",
    "DatasetError",
    "Sample",
    "TaskGenerator",
    "build_messages",
    "export_parquet",
    "generate",
    "get_task",
    "list_templates",
    "load_dataset",
    "load_template",
    "register_task",
    "render_prompt",
    "save_grid",
    "task_names",
    "write_tasks_grid",
]
