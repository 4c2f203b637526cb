/// The coordinator: two-stage Recommend over the shards (issue 5).
public enum CoordinatorModule {}
