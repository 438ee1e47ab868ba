"""Knowledge distillation: pure losses, the teacher/student objective with feature taps, student builders."""
