import pytest

from exitwise.registry import Registry


def test_register_and_get():
    reg = Registry("thing")
    reg.register("alpha", 1)

    @reg.register("beta")
    def beta():
        return 2

    assert reg.get("alpha") == 1 and reg.get("beta") is beta
    assert reg.names() == ["alpha", "beta"] and "alpha" in reg and len(reg) == 2


def test_duplicate_name_is_refused():
    reg = Registry("thing")
    reg.register("alpha", 1)
    with pytest.raises(KeyError, match="already registered"):
        reg.register("alpha", 2)
    assert reg.get("alpha") == 1


def test_unknown_name_suggests_near_matches():
    reg = Registry("backbone")
    reg.register("resnet18", 1)
    reg.register("resnet20", 2)
    with pytest.raises(KeyError, match=r"unknown backbone 'resnet19'.*Did you mean.*resnet18"):
        reg.get("resnet19")
    with pytest.raises(KeyError, match="Available: resnet18, resnet20"):
        reg.get("vgg")


def test_bad_name_rejected():
    with pytest.raises(ValueError, match="non-empty"):
        Registry("thing").register("", 1)
