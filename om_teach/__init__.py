"""om-teach: a course in privacy-preserving machine learning."""
