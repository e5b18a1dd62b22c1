"""A small Spark ML job (random forest), as in the reference workflow's examples."""

import random

from pyspark.ml.classification import RandomForestClassifier
from pyspark.ml.feature import VectorAssembler
from pyspark.sql import SparkSession

spark = SparkSession.builder.appName("ppml-rf").getOrCreate()
random.seed(0)
rows = [(random.random(), random.random()) for _ in range(400)]
df = spark.createDataFrame([(a, b, float(a + b > 1.0)) for a, b in rows], ["a", "b", "label"])
data = VectorAssembler(inputCols=["a", "b"], outputCol="features").transform(df)
model = RandomForestClassifier(numTrees=10, maxDepth=4, seed=1).fit(data)
acc = model.transform(data).filter("prediction = label").count() / data.count()
print(f"ACCURACY {acc:.3f}")
spark.stop()
