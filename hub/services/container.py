"""Composition root: the only place that turns Settings into live subsystems."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from hub.config import Settings
from hub.core.errors import BadInputError, StorageError
from storage.blobs import LocalBlobStore
from storage.catalog import Catalog, open_catalog


@dataclass
class Container:
    settings: Settings

    def init_home(self) -> None:
        """Create the data dir (idempotent); the catalog migrates itself when opened."""
        home = self.settings.home
        if home.exists() and not home.is_dir():
            raise BadInputError(f"data dir {str(home)[:200]!r} is a file", code="bad_data_dir")
        try:
            home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file in the way, a read-only or virtual file system...
            raise BadInputError(
                f"data dir {str(home)[:200]!r} cannot be used: {exc.strerror or exc}",
                code="bad_data_dir",
            ) from None

    @cached_property
    def catalog(self) -> Catalog:
        from sqlalchemy.exc import DatabaseError

        self.init_home()
        try:
            return open_catalog(self.settings.resolved_database_url)
        except DatabaseError as exc:  # e.g. catalog.db overwritten by something else
            raise StorageError(
                f"the catalog database cannot be read ({str(exc.orig or exc)[:200]}); restore "
                "it from a backup or point LORADEX_DATABASE_URL / --data-dir elsewhere",
                code="catalog_unreadable",
            ) from None

    @cached_property
    def blobs(self) -> LocalBlobStore:
        self.init_home()
        return LocalBlobStore(self.settings.resolved_blob_dir)

    @cached_property
    def registry(self):  # -> RegistryService; imported lazily to keep start-up light
        from hub.services.registry import RegistryService

        return RegistryService(self.catalog, self.blobs)

    @cached_property
    def models(self):  # -> ModelService
        from hub.services.models import ModelService

        s = self.settings
        return ModelService(self.registry, s.resolved_model_cache_dir, s.resolved_zoo_dir)

    @cached_property
    def search(self):  # -> SearchService
        from hub.services.search import SearchService

        return SearchService(
            self.registry,
            self.settings.home / "index",
            self.settings.text_embedder,
            device=self.settings.search_device,
            embedder_options={
                "backend": self.settings.text_embedder_backend,
                "cache_dir": self.settings.embedder_cache_dir,
            },
            refresh_interval_s=self.settings.search_refresh_interval_s,
            query_cache_size=self.settings.search_query_cache_size,
            index_params={
                "backend": self.settings.search_index_backend,
                "ann_threshold": self.settings.search_ann_threshold,
            },
        )

    @cached_property
    def merges(self):  # -> MergeService
        from hub.services.merge import MergeService

        return MergeService(self.registry)

    @cached_property
    def spectra(self):  # -> SpectraService (singular values per module, cached by digest)
        from hub.services.spectra import SpectraService

        return SpectraService(self.registry, self.settings.home / "cache" / "spectra")

    @cached_property
    def browse(self):  # -> BrowseService (facets, paging, lineage graph: the web catalog)
        from hub.services.browse import BrowseService

        return BrowseService(self.registry, self.search)

    @cached_property
    def sync(self):  # -> SyncService (Hugging Face Hub pull/push)
        from hub.services.sync import SyncService
        from storage.hf_hub import HfHubClient

        s = self.settings
        client = HfHubClient(s.resolved_hf_endpoint, s.resolved_hf_token, timeout_s=s.hf_timeout_s)
        return SyncService(self.registry, client)

    @cached_property
    def mixtures(self):  # -> MixtureService
        from hub.services.mixture import MixtureService

        return MixtureService(self.registry, self.models)

    @cached_property
    def transfers(self):  # -> TransferService
        from hub.services.transfer import TransferService

        return TransferService(self.registry, self.models)

    @cached_property
    def generators(self):  # -> GeneratorService (SG-LoRA)
        from hub.services.generation import GeneratorService

        return GeneratorService(
            self.registry, lambda: self.search.cards.embedder, self.settings.home / "generators"
        )
