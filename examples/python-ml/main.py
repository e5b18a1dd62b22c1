"""Example application: train a LightGBM classifier and report its accuracy.

Inside the enclave this runs as `python3 /ppml/app/main.py` (the command line
is fixed in the manifest, so it is part of the measurement).
"""

import lightgbm as lgb
from sklearn.datasets import make_classification
from sklearn.model_selection import train_test_split

X, y = make_classification(n_samples=2000, n_features=20, n_informative=8, random_state=7)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=7)
model = lgb.LGBMClassifier(n_estimators=100, learning_rate=0.1, verbose=-1)
model.fit(X_train, y_train)
print(f"test accuracy: {model.score(X_test, y_test):.3f}")
