/// The recsys load driver (issue 6).
public enum LoadTestModule {}
